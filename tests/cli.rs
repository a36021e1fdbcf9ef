//! The `rotagate` command line: check, explain, keygen.

use std::process::Command;

fn rotagate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("rotagate.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const UP: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

#[test]
fn check_accepts_the_default_config() {
    let (code, out, _) = rotagate(&["check", "-c", "config/rotagate.toml"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok (2 routes)"), "{out}");
}

#[test]
fn check_warns_about_rules_that_can_never_match() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        &format!("{UP}[[route]]\nname = \"a\"\nmatch = \"/a\"\n[[route]]\nname = \"again\"\nmatch = \"/a\"\n[[route]]\nname = \"all\"\nmatch = \"/:path*\"\n[[route]]\nname = \"late\"\nmatch = \"/late\"\n"),
    );
    let (code, out, _) = rotagate(&["check", "-c", &p]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: route[1] \"again\": can never match: duplicate of route 0"),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: route[3] \"late\": can never match: route 2 before it matches every request"
        ),
        "{out}"
    );
}

#[test]
fn check_fails_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, &format!("{UP}[[route]]\nmatch = \"/:\"\n"));
    let (code, _, err) = rotagate(&["check", "-c", &p]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "rotagate.toml:4:9: `route[0].match`: invalid pattern: Missing parameter name at 1"
        ),
        "{err}"
    );
}

#[test]
fn explain_tells_which_rule_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        &format!(
            "{UP}[[route]]\nname = \"static\"\nmatch = \"/_next/static/:path*\"\nbypass = true\n[[route]]\nname = \"admin\"\nmatch = {{ source = \"/admin/:p*\", has = [{{ type = \"header\", key = \"x-admin\" }}] }}\n[[route]]\nname = \"app\"\nmatch = \"/((?!api).*)\"\n"
        ),
    );
    let (code, out, _) = rotagate(&[
        "explain",
        "-c",
        &p,
        "GET",
        "https://app.test/admin/users?x=1",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("route[1] \"admin\": no match"), "{out}");
    assert!(
        out.contains("has header \"x-admin\" not satisfied"),
        "{out}"
    );
    assert!(
        out.contains("=> GET /admin/users is handled by route[2] \"app\""),
        "{out}"
    );
    let (_, out, _) = rotagate(&[
        "explain",
        "-c",
        &p,
        "GET",
        "/admin/users",
        "-H",
        "x-admin: 1",
    ]);
    assert!(
        out.contains("=> GET /admin/users is handled by route[1] \"admin\""),
        "{out}"
    );
    let (_, out, _) = rotagate(&["explain", "-c", &p, "GET", "/api/x"]);
    assert!(out.contains("matches no rule"), "{out}");
    let (_, out, _) = rotagate(&["explain", "-c", &p, "GET", "/x/..%2Fadmin"]);
    assert!(out.contains("refused with 400"), "{out}");
    let (code, _, err) = rotagate(&["explain", "-c", &p, "GET", "/", "-H", "no-colon"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected `name: value`"), "{err}");
}

#[test]
fn keygen_prints_a_fresh_secret() {
    let (code, a, _) = rotagate(&["keygen"]);
    let (_, b, _) = rotagate(&["keygen"]);
    assert_eq!(code, 0);
    assert_eq!(a.trim().len(), 43);
    assert!(a
        .trim()
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_ne!(a, b);
}

#[test]
fn check_and_explain_show_vault_settings_never_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let key = "cli-vault-key-cli-vault-key-cli-vault-key-01";
    let token = "cli-admin-token-0123456789";
    std::fs::write(dir.path().join("vault.key"), key).unwrap();
    std::fs::write(dir.path().join("admin.token"), token).unwrap();
    let p = write(
        &dir,
        &format!(
            "[listen]\npublic_origin = \"https://app.example.com\"\n{UP}[admin]\naddress = \"127.0.0.1:9091\"\ntoken = \"file:admin.token\"\n[session]\nmode = \"vault\"\nstore_path = \"s.redb\"\n[session.vault]\ncapture = [\"sid\"]\nsecrets = [\"file:vault.key\"]\n[[route]]\nname = \"static\"\nmatch = \"/_next/static/:p*\"\nbypass = true\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
        ),
    );
    let (code, out, err) = rotagate(&["check", "-c", &p]);
    assert_eq!(code, 0, "{err}");
    let store = dir.path().join("s.redb");
    assert!(
        out.contains(&format!("session: vault mode: handle cookie \"__Host-Http-rg\" (Secure), capture [\"sid\"], rotate_every 300s (±10 %), idle_timeout 1800s, absolute_timeout 43200s, slack 10s, store embedded {}, 1 secret(s), adopt_existing true", store.display())),
        "{out}"
    );
    assert!(out.contains("admin: sessions API on"), "{out}");
    let (code, out, _) = rotagate(&["explain", "-c", &p, "GET", "/_next/static/a.js"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("neither the handle nor the app's cookies are forwarded"),
        "{out}"
    );
    assert!(!out.contains(key) && !out.contains(token));
    // the sessions CLI says clearly when the proxy is not there (never the token)
    let (code, _, err) = rotagate(&["sessions", "revoke", "--subject", "ada", "-c", &p]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reach the admin listener at 127.0.0.1:9091"),
        "{err}"
    );
    assert!(!err.contains(token));
}
