//! Configuration: the TOML file model ([`file`]) and its validation into the runtime
//! configuration ([`runtime`]), with errors that name file, line, column, key and what
//! was expected.
//!
//! ```
//! let cfg = rotagate::config::parse(
//!     "[upstream]\nurl = \"http://127.0.0.1:3000\"\n",
//!     std::path::Path::new("inline.toml"),
//! ).unwrap();
//! assert_eq!(cfg.upstream().urls[0].authority, "127.0.0.1:3000");
//! ```

pub mod env;
pub mod file;
pub mod runtime;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use runtime::*;
pub use validate::{is_same_origin_path, parse_manifest, parse_origin};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 when the problem has no position (a missing file, …).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key with indexes, e.g. `route[2].match[0]`; empty when unknown.
    pub key: String,
    /// What was expected and what was found. Never contains a secret value.
    pub message: String,
}

/// Everything wrong with a config file (all problems found, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if p.line > 0 {
                write!(f, ":{}:{}", p.line, p.column)?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": `{}`: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

/// Reads and validates a config file, with this process's environment overrides
/// (`ROTAGATE_<SECTION>__<KEY>`, see [`env`]) applied.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let overrides = env::overrides_from_process().map_err(|e| override_error(path, e))?;
    load_with(path, &overrides)
}

/// Reads and validates a config file with the given overrides applied.
pub fn load_with(path: &Path, overrides: &[env::Override]) -> Result<Config, ConfigError> {
    parse_with(&read(path)?, path, overrides)
}

/// The effective configuration text of `path` for display (`rotagate check
/// --print-effective`): the file with this process's overrides applied, secrets
/// redacted, overridden keys listed.
pub fn effective_text(path: &Path) -> Result<String, ConfigError> {
    let overrides = env::overrides_from_process().map_err(|e| override_error(path, e))?;
    let text = read(path)?;
    let applied = env::apply(&text, &overrides).map_err(|e| override_error(path, e))?;
    Ok(env::display_text(&applied.text, &overrides))
}

/// The largest config file read (a config is a few KB; this bounds a mistake).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest file a config names (`file:` secrets and certificates, the Server
/// Action manifest) that is read.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Reads a regular file of at most `max` bytes. Anything else — a device such as
/// `/dev/zero`, a FIFO (whose open would block), a directory, a bigger file — is an
/// error: a config swap to the wrong target must not exhaust memory or hang a reload.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_big = || std::io::Error::other(format!("larger than {max} bytes"));
    if meta.len() > max {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_big());
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    read_bounded(path, MAX_CONFIG_BYTES)
        .and_then(|b| {
            String::from_utf8(b)
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
        })
        .map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })
}

fn override_error(path: &Path, e: env::OverrideError) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            key: String::new(),
            message: e.to_string(),
        }],
    }
}

/// Validates config text with `overrides` applied. Problems keep the file's own line
/// numbers; a problem with an overridden value (or a key an override named that does
/// not exist) names its variable instead of a line.
pub fn parse_with(
    text: &str,
    source: &Path,
    overrides: &[env::Override],
) -> Result<Config, ConfigError> {
    // without overrides, or when the file itself is not TOML: the file's own errors
    if overrides.is_empty() || toml::from_str::<toml::Table>(text).is_err() {
        return parse(text, source);
    }
    let applied = env::apply(text, overrides).map_err(|e| override_error(source, e))?;
    parse(&applied.text, source).map_err(|mut e| {
        for p in &mut e.problems {
            let from_file =
                p.line > 0 && applied.lines.get(p.line - 1).copied().flatten().is_some();
            let var = overrides.iter().find(|o| {
                let k = o.key();
                !p.key.is_empty()
                    && (k == p.key
                        || k.starts_with(&format!("{}.", p.key))
                        || p.key.starts_with(&format!("{k}.")))
            });
            match (from_file, var) {
                (true, None) => p.line = applied.lines[p.line - 1].unwrap_or(0),
                (true, Some(o)) if p.key != o.key() => {
                    p.line = applied.lines[p.line - 1].unwrap_or(0)
                }
                (_, Some(o)) => {
                    p.line = 0;
                    p.column = 0;
                    p.message = format!("{} (set by {})", p.message, o.var);
                }
                (false, None) => {
                    p.line = 0;
                    p.column = 0;
                    p.message = format!("{} (in the environment overrides)", p.message);
                }
            }
        }
        e
    })
}

/// Validates config text; `source` names the file in messages and anchors relative
/// `file:` references.
pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
    let locator = Locator::new(text);
    let model: file::FileConfig = toml::from_str(text).map_err(|e| {
        let span = e.span();
        let message = e.message().trim().replace('\n', " ");
        // toml has no words for some breaks (a key with no value at the end of the
        // file): the location still says where, this says what
        let message = if message.is_empty() {
            "invalid TOML: expected a value here".to_string()
        } else {
            message
        };
        let mut problem = locator.problem(span, None, message);
        redact_secret_value(&mut problem);
        ConfigError {
            file: source.to_path_buf(),
            problems: vec![problem],
        }
    })?;
    validate::validate(model, source, &locator)
}

/// A TOML type error quotes the value it found (`invalid type: string "…", expected a
/// sequence`): under a secret key that value may be the secret itself, pasted where a
/// reference belongs. Quoted text in such a message is replaced.
fn redact_secret_value(p: &mut Problem) {
    let last = p
        .key
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .split('[')
        .next()
        .unwrap_or_default();
    if !env::SECRET_KEYS.contains(&last) {
        return;
    }
    let mut out = String::with_capacity(p.message.len());
    let mut rest = p.message.as_str();
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        // the closing quote (serde escapes quotes inside with a backslash)
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        out.push_str("<the value is not shown>");
        match end {
            Some(e) => rest = &after[e + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    p.message = format!("{out} (secrets are `env:NAME` or `file:PATH` references)");
}

/// Turns byte offsets into line, column and key path.
pub(crate) struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    /// A problem at `span`; `key` overrides the key path found from the span.
    pub(crate) fn problem(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> Problem {
        let (line, column) = span.as_ref().map_or((0, 0), |s| self.line_col(s.start));
        let key =
            key.unwrap_or_else(|| span.and_then(|s| self.key_at(s.start)).unwrap_or_default());
        Problem {
            line,
            column,
            key,
            message,
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..self.text.floor_char_boundary_compat(offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The dotted key path of the deepest key or value whose span holds `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let doc = self.doc.as_ref()?;
        let mut path = Vec::new();
        if find_in_table(doc.as_table(), offset, &mut path) {
            Some(join_path(&path))
        } else {
            None
        }
    }
}

/// `str::floor_char_boundary` is unstable; this is the same for our use.
trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

fn join_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn find_in_table(t: &toml_edit::Table, offset: usize, path: &mut Vec<Seg>) -> bool {
    find_in_entries(
        t.iter().filter_map(|(name, _)| t.get_key_value(name)),
        offset,
        path,
    )
}

/// The deepest key (or its value) among `entries` whose span holds `offset`.
fn find_in_entries<'a>(
    entries: impl Iterator<Item = (&'a toml_edit::Key, &'a toml_edit::Item)>,
    offset: usize,
    path: &mut Vec<Seg>,
) -> bool {
    for (key, item) in entries {
        path.push(Seg::Key(key.get().to_string()));
        if find_in_item(item, offset, path)
            || contains(key.span(), offset)
            || contains(item.span(), offset)
        {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &toml_edit::Item, offset: usize, path: &mut Vec<Seg>) -> bool {
    match item {
        toml_edit::Item::Table(t) => find_in_table(t, offset, path),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if find_in_table(t, offset, path) || contains(t.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        toml_edit::Item::Value(v) => find_in_value(v, offset, path),
        toml_edit::Item::None => false,
    }
}

fn find_in_value(v: &toml_edit::Value, offset: usize, path: &mut Vec<Seg>) -> bool {
    match v {
        toml_edit::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if find_in_value(x, offset, path) || contains(x.span(), offset) {
                    return true;
                }
                path.pop();
            }
            false
        }
        toml_edit::Value::InlineTable(t) => find_in_entries(
            t.iter().filter_map(|(name, _)| t.get_key_value(name)),
            offset,
            path,
        ),
        _ => false,
    }
}
