//! Every shipped config parses; bad configs get errors naming file, line, column, key
//! and what was expected.

use std::path::Path;

use rotagate::config;

fn err(text: &str) -> String {
    config::parse(text, Path::new("test.toml"))
        .unwrap_err()
        .to_string()
}

const UP: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

#[test]
fn shipped_default_config_parses() {
    let cfg = config::load(Path::new("config/rotagate.toml")).unwrap();
    assert_eq!(cfg.listen.address.to_string(), "0.0.0.0:8080");
    assert_eq!(cfg.admin.unwrap().address.to_string(), "127.0.0.1:9091");
    assert_eq!(cfg.routes.len(), 2);
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn every_example_parses() {
    // the examples reference secrets by env var; give them test values
    std::env::set_var(
        "ROTAGATE_JWT_SECRET",
        "an-example-secret-of-at-least-32-bytes!!",
    );
    std::env::set_var("AUTH_SECRET", "an-example-auth-secret-of-32-bytes-or-more");
    std::env::set_var(
        "ROTAGATE_VAULT_KEY",
        "an-example-vault-key-of-32-bytes-or-more!",
    );
    std::env::set_var("ROTAGATE_ADMIN_TOKEN", "an-example-admin-token");
    let mut n = 0;
    for entry in std::fs::read_dir("config/examples").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn unknown_key_names_the_key_and_position() {
    let e = err(&format!(
        "[listen]\naddress = \"0.0.0.0:8080\"\nadress = \"x\"\n{UP}"
    ));
    assert!(
        e.starts_with("test.toml:3:1: `listen.adress`: unknown field `adress`"),
        "{e}"
    );
    assert!(e.contains("expected one of"), "{e}");
}

#[test]
fn bad_duration_says_what_was_expected() {
    let e = err(&format!("{UP}read_timeout = \"five\"\n"));
    assert_eq!(e, "test.toml:3:16: `upstream.read_timeout`: expected a duration like \"5m\" (units ms, s, m, h, d), found \"five\"");
}

#[test]
fn bad_pattern_gives_path_to_regexp_reason() {
    let e = err(&format!(
        "{UP}[[route]]\nname = \"a\"\nmatch = \"/ok\"\n[[route]]\nmatch = [\"/fine\", \"/(abc\"]\n"
    ));
    assert!(
        e.starts_with(
            "test.toml:7:9: `route[1].match[1]`: invalid pattern: Unbalanced pattern at 1"
        ),
        "{e}"
    );
}

#[test]
fn inline_secret_is_refused_without_echoing_it() {
    let text = format!(
        "{UP}[session]\n[session.reissue]\nformat = \"jwt\"\n[[session.reissue.keys]]\nalg = \"HS256\"\nsecret = \"hunter2-hunter2-hunter2-hunter2-hunter2\"\n"
    );
    let e = err(&text);
    assert!(e.contains("`session.reissue.keys[0].secret`: expected a secret reference \"env:NAME\" or \"file:PATH\""), "{e}");
    assert!(e.starts_with("test.toml:8:10:"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn missing_env_secret_names_the_variable_not_a_value() {
    let e = err(&format!(
        "{UP}[session]\n[session.reissue]\n[[session.reissue.keys]]\nalg = \"HS256\"\nsecret = \"env:ROTAGATE_TEST_UNSET_VAR\"\n"
    ));
    assert!(e.contains("`session.reissue.keys[0].secret`: environment variable ROTAGATE_TEST_UNSET_VAR is not set"), "{e}");
}

#[test]
fn short_hmac_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), "short\n").unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("{UP}[session]\n[session.reissue]\n[[session.reissue.keys]]\nalg = \"HS256\"\nsecret = \"file:s\"\n")).unwrap();
    let e = config::load(&path).unwrap_err().to_string();
    assert!(e.contains("needs at least 32 bytes, found 5"), "{e}");
}

#[test]
fn bypass_with_require_is_an_error() {
    let e = err(&format!(
        "{UP}[[route]]\nmatch = \"/x\"\nbypass = true\nrequire = {{ session = true }}\n"
    ));
    assert!(
        e.starts_with("test.toml:6:11: `route[0].require`: a route with `bypass = true`"),
        "{e}"
    );
}

#[test]
fn several_problems_are_all_reported() {
    let e = err("[listen]\naddress = \"nowhere\"\n[upstream]\nurl = \"ftp://app\"\nconnect_timeout = \"2 s\"\n");
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(
        lines[0].starts_with("test.toml:2:11: `listen.address`: expected an address"),
        "{e}"
    );
    assert!(
        lines[1].contains("`upstream.url`: expected a URL like"),
        "{e}"
    );
    assert!(
        lines[2].contains("`upstream.connect_timeout`: expected a duration"),
        "{e}"
    );
}

#[test]
fn toml_syntax_errors_have_positions() {
    let e = err("[listen\naddress = 1\n");
    assert!(e.starts_with("test.toml:1:"), "{e}");
    let e = err("[listen]\naddress = 5\n[upstream]\nurl = \"http://x:1\"\n");
    assert!(
        e.starts_with(
            "test.toml:2:11: `listen.address`: invalid type: integer `5`, expected a string"
        ),
        "{e}"
    );
}

#[test]
fn claims_predicates_parse() {
    let cfg = config::parse(
        &format!("{UP}[[route]]\nmatch = \"/p/:x*\"\nrequire = {{ claims = {{ has_access = true, plan = {{ one_of = [\"pro\", \"team\"] }}, roles = {{ contains = \"admin\" }}, email_verified = {{ present = true }}, \"org.tier\" = \"gold\" }} }}\non_deny = {{ redirect = \"/pricing\" }}\n"),
        Path::new("t.toml"),
    )
    .unwrap();
    let r = &cfg.routes[0];
    let req = r.require.as_ref().unwrap();
    assert!(req.session);
    assert_eq!(req.claims.len(), 5);
    assert_eq!(r.on_deny, config::OnDeny::Redirect("/pricing".into()));
    assert!(req.claims.iter().any(|c| c.path == ["org", "tier"]));
}

#[test]
fn log_access_is_on_by_default_and_a_bool() {
    let cfg = config::parse(UP, Path::new("test.toml")).unwrap();
    assert!(cfg.log.access, "one access line per request by default");
    let cfg = config::parse(
        &format!("{UP}[log]\naccess = false\n"),
        Path::new("test.toml"),
    )
    .unwrap();
    assert!(!cfg.log.access);
    let e = err(&format!("{UP}[log]\naccess = \"no\"\n"));
    assert!(
        e.starts_with(
            "test.toml:4:10: `log.access`: invalid type: string \"no\", expected a boolean"
        ),
        "{e}"
    );
    let e = err(&format!("{UP}[log]\nacess = false\n"));
    assert!(
        e.starts_with("test.toml:4:1: `log.acess`: unknown field `acess`"),
        "{e}"
    );
}

/// A vault key for tests, under a name of the test's own (tests run in parallel).
fn vault_key(var: &str) -> String {
    std::env::set_var(var, "vault-test-key-vault-test-key-0123456789");
    format!("secrets = [\"env:{var}\"]\n")
}

#[test]
fn vault_defaults_are_the_documented_ones() {
    std::env::set_var(
        "ROTAGATE_VAULT_KEY",
        "an-example-vault-key-of-32-bytes-or-more!",
    );
    let cfg = config::parse(
        &format!("{UP}[session]\nmode = \"vault\"\n"),
        Path::new("/etc/rotagate/rotagate.toml"),
    )
    .unwrap();
    let s = cfg.session.unwrap();
    assert_eq!(s.rotate_every.as_secs(), 300);
    assert_eq!(s.idle_timeout.unwrap().as_secs(), 1800);
    assert_eq!(s.absolute_timeout.as_secs(), 12 * 3600);
    let v = s.mode.vault().unwrap();
    assert_eq!(v.cookie, "rg", "plain http origin: no prefix");
    assert!(!v.attributes.secure && v.attributes.http_only);
    assert_eq!(v.attributes.path, "/");
    assert_eq!(v.capture, vec!["sid".to_string()]);
    assert_eq!(v.slack.as_secs(), 10);
    assert!(v.adopt_existing);
    assert_eq!(v.secrets.len(), 1);
    assert_eq!(
        v.store,
        config::StoreSpec::Embedded("/var/lib/rotagate/sessions.redb".into())
    );
    // https: the handle gets the __Host-Http- prefix and Secure
    let cfg = config::parse(
        &format!(
            "[listen]\npublic_origin = \"https://app.example.com\"\n{UP}[session]\nmode = \"vault\"\nstore = \"memory\"\nstore_path = \"x\"\n[session.vault]\n{}",
            vault_key("VAULT_KEY_DEFAULTS")
        ),
        Path::new("t.toml"),
    );
    let e = cfg.unwrap_err().to_string();
    assert!(
        e.contains("`session.store_path`: `store_path` applies to store = \"embedded\" only"),
        "{e}"
    );
    let cfg = config::parse(
        &format!(
            "[listen]\npublic_origin = \"https://app.example.com\"\n{UP}[session]\nmode = \"vault\"\nstore = \"memory\"\n[session.vault]\n{}",
            vault_key("VAULT_KEY_DEFAULTS")
        ),
        Path::new("t.toml"),
    )
    .unwrap();
    let v = cfg.session.unwrap();
    let v = v.mode.vault().unwrap();
    assert_eq!(v.cookie, "__Host-Http-rg");
    assert!(v.attributes.secure);
    assert_eq!(v.store, config::StoreSpec::Memory);
}

#[test]
fn vault_store_path_is_relative_to_the_config_file() {
    let text = format!(
        "{UP}[session]\nmode = \"vault\"\nstore_path = \"data/s.redb\"\n[session.vault]\n{}",
        vault_key("VAULT_KEY_PATH")
    );
    let cfg = config::parse(&text, Path::new("/srv/rg/rotagate.toml")).unwrap();
    assert_eq!(
        cfg.session.unwrap().mode.vault().unwrap().store,
        config::StoreSpec::Embedded("/srv/rg/data/s.redb".into())
    );
}

#[test]
fn vault_mistakes_name_file_line_key_and_expectation() {
    let key = vault_key("VAULT_KEY_MISTAKES");
    let cases: &[(&str, &str)] = &[
        (
            "[session]\nmode = \"vault\"\nslack = \"2m\"\n",
            "test.toml:5:9: `session.slack`: expected at most \"60s\"",
        ),
        (
            "[session]\nmode = \"vault\"\nstore = \"redis://app:pw@cache:6379/0\"\n",
            "test.toml:5:9: `session.store`: a password inside the store URL is refused",
        ),
        (
            "[session]\nmode = \"vault\"\nstore = \"redis://cache:6379/0\"\nstore_password = \"hunter2\"\n",
            "test.toml:6:18: `session.store_password`: expected a secret reference \"env:NAME\" or \"file:PATH\"",
        ),
        (
            "[session]\nmode = \"vault\"\nstore = \"rediss://cache:6379/x\"\n",
            "test.toml:5:9: `session.store`: expected a database number",
        ),
        (
            "[session]\nmode = \"vault\"\nstore = \"memory\"\nstore_username = \"env:U\"\n",
            "test.toml:6:18: `session.store_username`: `store_username` applies to a Redis store only (store = \"redis://…\", \"rediss://…\" or \"redis+sentinel://…\")",
        ),
        (
            "[session]\nmode = \"vault\"\nstore = \"sqlite\"\n",
            "test.toml:5:9: `session.store`: expected \"embedded\", \"memory\", \"redis://…\", \"rediss://…\" or \"redis+sentinel://…\", found \"sqlite\"",
        ),
        (
            "[session]\nmode = \"vault\"\n[session.vault]\nsecrets = [\"env:VAULT_KEY_UNSET_NOWHERE\"]\n",
            "test.toml:6:12: `session.vault.secrets[0]`: environment variable VAULT_KEY_UNSET_NOWHERE is not set or empty",
        ),
        (
            "[session]\nmode = \"vault\"\n[session.vault]\ncookie = \"__Host-rg\"\n",
            "`session.vault.cookie`: cookie \"__Host-rg\" needs Secure",
        ),
        (
            "[session]\nmode = \"vault\"\n[session.vault]\ncapture = []\n",
            "`session.vault.capture`: expected at least one cookie name",
        ),
        (
            "[session]\nmode = \"vault\"\n[session.vault]\ncapture = [\"rg\"]\n",
            "is the handle cookie's own name",
        ),
        (
            "[session]\nmode = \"reissue\"\nslack = \"5s\"\n[session.reissue]\nformat = \"jwt\"\n",
            "test.toml:5:9: `session.slack`: `slack` applies to mode = \"vault\" only",
        ),
        (
            "[session]\nmode = \"vaulted\"\n",
            "`session.mode`: expected \"reissue\" or \"vault\", found \"vaulted\"",
        ),
    ];
    for (body, want) in cases {
        let text = if body.contains("[session.vault]") || body.contains("reissue") {
            format!("{UP}{body}")
        } else {
            format!("{UP}{body}[session.vault]\n{key}")
        };
        let e = err(&text);
        assert!(e.contains(want), "for\n{body}\nwant {want:?}\ngot  {e}");
    }
}

#[test]
fn vault_secrets_must_be_references_of_32_bytes() {
    std::env::set_var("VAULT_KEY_SHORT", "too-short");
    let e = err(&format!(
        "{UP}[session]\nmode = \"vault\"\n[session.vault]\nsecrets = [\"env:VAULT_KEY_SHORT\"]\n"
    ));
    assert!(
        e.contains(
            "`session.vault.secrets[0]`: expected a secret of at least 32 bytes, found 9 bytes"
        ),
        "{e}"
    );
    let inline = "inline-vault-secret-inline-vault-secret-0123";
    let e = err(&format!(
        "{UP}[session]\nmode = \"vault\"\n[session.vault]\nsecrets = [\"{inline}\"]\n"
    ));
    assert!(e.contains("secrets are never written inline"), "{e}");
    assert!(!e.contains(inline), "the value is never echoed: {e}");
    // the default reference, when its variable is missing, names the key
    std::env::remove_var("ROTAGATE_VAULT_KEY_NEVER_SET");
    let e = err(&format!(
        "{UP}[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"short\"\n"
    ));
    assert!(
        e.contains("`admin.token`: expected a secret reference"),
        "{e}"
    );
    std::env::set_var("ADMIN_TOKEN_SHORT", "short");
    let e = err(&format!(
        "{UP}[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"env:ADMIN_TOKEN_SHORT\"\n"
    ));
    assert!(
        e.contains("`admin.token`: expected an admin token of at least 16 bytes"),
        "{e}"
    );
}
