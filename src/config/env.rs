//! Environment overrides for containers: `ROTAGATE_<SECTION>__<KEY>=value` sets one
//! scalar key of the config file (`ROTAGATE_LISTEN__THREADS=2` is `[listen] threads =
//! 2`; nested sections take more double underscores: `ROTAGATE_SESSION__VAULT__COOKIE`).
//!
//! Only names with a double underscore after `ROTAGATE_` are overrides, so secret
//! variables named in `env:` references (`ROTAGATE_JWT_SECRET`) are left alone. The
//! overrides are applied to the file's TOML before validation, so an override goes
//! through exactly the checks a value written in the file does (a secret key still
//! takes only an `env:`/`file:` reference, an unknown key is refused); a problem with an
//! overridden value names its variable.
//!
//! ```
//! use rotagate::config::env::{overrides_from, apply};
//! let vars = [("ROTAGATE_LISTEN__THREADS".to_string(), "2".to_string())];
//! let o = overrides_from(vars).unwrap();
//! let text = apply("[upstream]\nurl = \"http://127.0.0.1:3000\"\n", &o).unwrap();
//! assert!(text.text.contains("threads = 2"));
//! ```

use std::ffi::OsString;

use toml_edit::{DocumentMut, Item, Value};

/// The prefix every override starts with.
pub const PREFIX: &str = "ROTAGATE_";

/// One override read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable, e.g. `ROTAGATE_LISTEN__THREADS`.
    pub var: String,
    /// The key path, e.g. `["listen", "threads"]`.
    pub path: Vec<String>,
    /// The value as written in the environment.
    pub value: String,
}

impl Override {
    /// The dotted key, e.g. `listen.threads`.
    pub fn key(&self) -> String {
        self.path.join(".")
    }
}

/// Why the environment's overrides cannot be used: names the variable, never its value
/// (it may be meant for a secret key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}: {message}")]
pub struct OverrideError {
    /// The variable.
    pub var: String,
    /// What is wrong.
    pub message: String,
}

/// The key path an override variable names, `None` when `name` is not an override
/// (no `ROTAGATE_` prefix or no double underscore after it).
pub fn override_path(name: &str) -> Option<Result<Vec<String>, String>> {
    let rest = name.strip_prefix(PREFIX)?;
    if !rest.contains("__") {
        return None;
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let bad = path.iter().find(|seg| {
        seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    Some(match bad {
        Some(_) => Err(format!(
            "expected ROTAGATE_<SECTION>__<KEY> with letters, digits and single underscores between the double underscores (e.g. ROTAGATE_LISTEN__THREADS), found {name}"
        )),
        None => Ok(path),
    })
}

/// The overrides among `vars`, sorted by variable name (one order on every machine).
pub fn overrides_from(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, OverrideError> {
    let mut out = Vec::new();
    for (var, value) in vars {
        match override_path(&var) {
            None => {}
            Some(Err(message)) => return Err(OverrideError { var, message }),
            Some(Ok(path)) => out.push(Override { var, path, value }),
        }
    }
    out.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(out)
}

/// The overrides in this process's environment. A variable with a name or value that is
/// not UTF-8 is an error when its name could be an override.
pub fn overrides_from_process() -> Result<Vec<Override>, OverrideError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_string) else {
            continue; // not UTF-8: cannot be ROTAGATE_…
        };
        if override_path(&name).is_none() {
            continue;
        }
        let value = value.into_string().map_err(|_: OsString| OverrideError {
            var: name.clone(),
            message: "the value is not UTF-8".to_string(),
        })?;
        vars.push((name, value));
    }
    overrides_from(vars)
}

/// The config text with overrides applied, and how to map its lines back to the file's.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The effective TOML text.
    pub text: String,
    /// For each line of `text` (0-based), the 1-based line of the original file it
    /// came from unchanged; `None` for lines the overrides wrote.
    pub lines: Vec<Option<usize>>,
}

/// Applies `overrides` to config `text` (already valid TOML). Overrides go through the
/// same validation as file values afterwards; this only refuses what cannot be written
/// as a scalar key: a path through an array, an array or table as the target.
pub fn apply(text: &str, overrides: &[Override]) -> Result<Applied, OverrideError> {
    if overrides.is_empty() {
        let lines = (1..=text.lines().count()).map(Some).collect();
        return Ok(Applied {
            text: text.to_string(),
            lines,
        });
    }
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| OverrideError {
            var: overrides[0].var.clone(),
            message: format!(
                "the config file is not valid TOML, overrides cannot be applied: {}",
                e.message()
            ),
        })?;
    for o in overrides {
        set(&mut doc, o)?;
    }
    let out = doc.to_string();
    let lines = map_lines(text, &out);
    Ok(Applied { text: out, lines })
}

fn set(doc: &mut DocumentMut, o: &Override) -> Result<(), OverrideError> {
    let err = |message: String| OverrideError {
        var: o.var.clone(),
        message,
    };
    let (last, sections) = o.path.split_last().expect("an override path has two parts");
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    let mut walked: Vec<&str> = Vec::new();
    for seg in sections {
        walked.push(seg);
        let here = walked.join(".");
        if table.get(seg).is_none() {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            table.insert(seg, Item::Table(t));
        }
        let item = table.get_mut(seg).expect("inserted above");
        table = match item {
            Item::ArrayOfTables(_) => {
                return Err(err(format!(
                    "`{here}` is an array of tables; its entries are not overridable (write them in the file)"
                )))
            }
            Item::Value(Value::Array(_)) => {
                return Err(err(format!("`{here}` is an array, not a section")))
            }
            other => match other.as_table_like_mut() {
                Some(t) => t,
                None => return Err(err(format!("`{here}` is a value, not a section"))),
            },
        };
    }
    let key = o.key();
    let value = match table.get(last) {
        Some(Item::Value(Value::String(_))) => Value::from(o.value.as_str()),
        Some(Item::Value(Value::Integer(_))) => o
            .value
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| err(format!("`{key}` takes an integer")))?,
        Some(Item::Value(Value::Float(_))) => o
            .value
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| err(format!("`{key}` takes a number")))?,
        Some(Item::Value(Value::Boolean(_))) => match o.value.trim() {
            "true" => Value::from(true),
            "false" => Value::from(false),
            _ => return Err(err(format!("`{key}` takes true or false"))),
        },
        Some(Item::Value(Value::Datetime(_))) => {
            return Err(err(format!("`{key}` is a date-time, which no key takes")))
        }
        Some(Item::Value(Value::Array(_))) => {
            return Err(err(format!(
                "`{key}` is an array; only scalar keys are overridable"
            )))
        }
        Some(Item::ArrayOfTables(_)) => {
            return Err(err(format!(
                "`{key}` is an array of tables; its entries are not overridable"
            )))
        }
        Some(Item::Table(_) | Item::Value(Value::InlineTable(_))) => {
            return Err(err(format!(
                "`{key}` is a section; override its keys (`{}__<KEY>`)",
                o.var
            )))
        }
        Some(Item::None) | None => infer(&o.value),
    };
    table.insert(last, Item::Value(value));
    Ok(())
}

/// A value for a key the file does not set: `true`/`false` and integers as themselves,
/// a `"quoted"` TOML string as that string, anything else as a string.
fn infer(raw: &str) -> Value {
    let t = raw.trim();
    match t {
        "true" => return Value::from(true),
        "false" => return Value::from(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        if let Ok(Value::String(s)) = t.parse::<Value>() {
            return Value::from(s.value().as_str());
        }
    }
    Value::from(raw)
}

/// Maps each line of `new` to the line of `old` it is an unchanged copy of (toml_edit
/// keeps untouched lines verbatim and only replaces or inserts the overridden ones).
fn map_lines(old: &str, new: &str) -> Vec<Option<usize>> {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    let mut out = Vec::with_capacity(new.len());
    let mut j = 0;
    for (i, line) in new.iter().enumerate() {
        if j < old.len() && *line == old[j] {
            out.push(Some(j + 1));
            j += 1;
        } else if j < old.len() && new.get(i + 1).is_some_and(|n| old.get(j + 1) == Some(n)) {
            // a replaced line: the next lines line up again
            out.push(None);
            j += 1;
        } else {
            out.push(None);
        }
    }
    out
}

/// Keys whose values are secret references: `--print-effective` shows only their kind.
pub const SECRET_KEYS: &[&str] = &[
    "token",
    "secret",
    "secrets",
    "private_key",
    "keys",
    "store_password",
    "store_username",
    "store_sentinel_password",
    "key",
];

/// The effective text for display: every value of a key in [`SECRET_KEYS`] that is not
/// an `env:`/`file:` reference is replaced by `"<redacted>"` (validation refuses such
/// values anyway; this makes sure a mistake is never printed), and each overridden key
/// gets a comment naming its variable.
pub fn display_text(effective: &str, overrides: &[Override]) -> String {
    let Ok(mut doc) = effective.parse::<DocumentMut>() else {
        return "# (not valid TOML)\n".to_string();
    };
    redact_table(doc.as_table_mut());
    let mut out = doc.to_string();
    if !overrides.is_empty() {
        out.push_str("\n# environment overrides applied above:\n");
        for o in overrides {
            out.push_str(&format!("#   {} = {}\n", o.key(), o.var));
        }
    }
    out
}

fn redact_table(t: &mut dyn toml_edit::TableLike) {
    for (k, item) in t.iter_mut() {
        let secret = SECRET_KEYS.contains(&k.get());
        redact_item(item, secret);
    }
}

fn redact_item(item: &mut Item, secret: bool) {
    match item {
        Item::Table(t) => redact_table(t),
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                redact_table(t);
            }
        }
        Item::Value(v) => redact_value(v, secret),
        Item::None => {}
    }
}

fn redact_value(v: &mut Value, secret: bool) {
    match v {
        Value::String(s) if secret => {
            let r = s.value();
            if !(r.starts_with("env:") || r.starts_with("file:")) {
                *v = Value::from("<redacted>");
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                redact_value(x, secret);
            }
        }
        Value::InlineTable(t) => redact_table(t),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(var: &str, value: &str) -> Vec<Override> {
        overrides_from([(var.to_string(), value.to_string())]).unwrap()
    }

    #[test]
    fn only_double_underscore_names_are_overrides() {
        assert_eq!(override_path("ROTAGATE_JWT_SECRET"), None);
        assert_eq!(override_path("HOME"), None);
        assert_eq!(
            override_path("ROTAGATE_LISTEN__THREADS"),
            Some(Ok(vec!["listen".into(), "threads".into()]))
        );
        assert_eq!(
            override_path("ROTAGATE_SESSION__VAULT__COOKIE"),
            Some(Ok(vec!["session".into(), "vault".into(), "cookie".into()]))
        );
        assert!(matches!(
            override_path("ROTAGATE_LISTEN____X"),
            Some(Err(_))
        ));
        assert!(matches!(override_path("ROTAGATE_LISTEN__"), Some(Err(_))));
        assert!(matches!(
            override_path("ROTAGATE_LISTEN__A-B"),
            Some(Err(_))
        ));
    }

    #[test]
    fn values_take_the_type_of_the_file_or_are_inferred() {
        let text = "[listen]\naddress = \"0.0.0.0:1\"\nthreads = 1\nh2c = true\n";
        let a = apply(text, &o("ROTAGATE_LISTEN__THREADS", "4")).unwrap();
        assert!(a.text.contains("threads = 4"), "{}", a.text);
        let a = apply(text, &o("ROTAGATE_LISTEN__H2C", "false")).unwrap();
        assert!(a.text.contains("h2c = false"));
        let e = apply(text, &o("ROTAGATE_LISTEN__H2C", "nope")).unwrap_err();
        assert!(e.message.contains("true or false"));
        // a string key keeps a number-like value a string
        let a = apply(text, &o("ROTAGATE_LISTEN__ADDRESS", "80")).unwrap();
        assert!(a.text.contains("address = \"80\""), "{}", a.text);
        // absent keys: inferred; quotes force a string
        let a = apply(text, &o("ROTAGATE_LISTEN__MAX_CONNECTIONS", "7")).unwrap();
        assert!(a.text.contains("max_connections = 7"));
        let a = apply(text, &o("ROTAGATE_LISTEN__BODY_TIMEOUT", "\"60\"")).unwrap();
        assert!(a.text.contains("body_timeout = \"60\""), "{}", a.text);
        let a = apply(
            text,
            &o("ROTAGATE_LISTEN__PUBLIC_ORIGIN", "https://a.example"),
        )
        .unwrap();
        assert!(a.text.contains("public_origin = \"https://a.example\""));
    }

    #[test]
    fn a_missing_section_is_created() {
        let a = apply(
            "[upstream]\nurl = \"http://x:1\"\n",
            &o("ROTAGATE_ADMIN__ADDRESS", "127.0.0.1:9"),
        )
        .unwrap();
        let v: toml::Table = toml::from_str(&a.text).unwrap();
        assert_eq!(v["admin"]["address"].as_str(), Some("127.0.0.1:9"));
    }

    #[test]
    fn nested_sections_and_their_arrays_of_tables() {
        let text = "[listen]\naddress = \"0.0.0.0:1\"\n[listen.tls]\naddress = \"0.0.0.0:2\"\n[[listen.tls.certificates]]\ncert = \"file:a\"\nkey = \"file:b\"\n";
        let a = apply(text, &o("ROTAGATE_LISTEN__TLS__HSTS", "max-age=60")).unwrap();
        let v: toml::Table = toml::from_str(&a.text).unwrap();
        assert_eq!(v["listen"]["tls"]["hsts"].as_str(), Some("max-age=60"));
        assert_eq!(
            v["listen"]["tls"]["certificates"][0]["cert"].as_str(),
            Some("file:a")
        );
        let e = apply(
            text,
            &o("ROTAGATE_LISTEN__TLS__CERTIFICATES__0__CERT", "file:c"),
        )
        .unwrap_err();
        assert!(e.message.contains("array of tables"), "{}", e.message);
    }

    #[test]
    fn arrays_and_tables_are_not_overridable() {
        let text = "allowed = 1\n[listen]\nallowed_hosts = [\"a\"]\n[[route]]\nmatch = \"/a\"\n";
        let e = apply(text, &o("ROTAGATE_ROUTE__0__MATCH", "/b")).unwrap_err();
        assert!(e.message.contains("array of tables"), "{}", e.message);
        let e = apply(text, &o("ROTAGATE_LISTEN__ALLOWED_HOSTS", "b")).unwrap_err();
        assert!(e.message.contains("only scalar keys"));
        let e = apply(text, &o("ROTAGATE_ROUTE__X", "b")).unwrap_err();
        assert!(e.message.contains("array of tables"));
        let e = apply(text, &o("ROTAGATE_ALLOWED__X", "b")).unwrap_err();
        assert!(e.message.contains("a value, not a section"));
        let e = apply(text, &o("ROTAGATE_X__LISTEN", "b"));
        assert!(
            e.is_ok(),
            "a new section named x: validation refuses it later"
        );
    }

    #[test]
    fn lines_map_back_to_the_file() {
        let text = "# c\n[listen]\nthreads = 1\n\n[upstream]\nurl = \"http://x:1\"\n";
        let a = apply(text, &o("ROTAGATE_LISTEN__THREADS", "2")).unwrap();
        let url_line = a.text.lines().position(|l| l.starts_with("url")).unwrap();
        assert_eq!(a.lines[url_line], Some(6));
        let threads_line = a
            .text
            .lines()
            .position(|l| l.starts_with("threads"))
            .unwrap();
        assert_eq!(a.lines[threads_line], None);
        let a = apply(text, &o("ROTAGATE_LISTEN__H2C", "true")).unwrap();
        let url_line = a.text.lines().position(|l| l.starts_with("url")).unwrap();
        assert_eq!(a.lines[url_line], Some(6));
    }

    #[test]
    fn display_redacts_inline_secrets_and_names_overrides() {
        let text = "[admin]\naddress = \"127.0.0.1:1\"\ntoken = \"hunter2hunter2hunter2\"\n[session.vault]\nsecrets = [\"env:A\", \"literal\"]\n";
        let shown = display_text(text, &o("ROTAGATE_ADMIN__ADDRESS", "127.0.0.1:2"));
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("literal"));
        assert!(shown.contains("env:A"));
        assert!(shown.contains("admin.address = ROTAGATE_ADMIN__ADDRESS"));
    }
}
