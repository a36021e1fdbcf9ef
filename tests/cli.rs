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
