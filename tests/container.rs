//! Container-native operation with the real binary: environment overrides
//! (`ROTAGATE_<SECTION>__<KEY>`), `check --print-effective`, reload when the config or
//! a file it reads changes (also through a Kubernetes-style `..data` symlink swap),
//! `rotagate health`, and the runtime image's shared libraries. Synchronisation is on
//! the process's announce lines and the admin long-poll (`/config?after_attempts=N`),
//! never on sleeps.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

fn rotagate(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const BASE: &str = "[listen]\naddress = \"127.0.0.1:0\"\nthreads = 1\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"env:ROTAGATE_ADMIN_TOKEN\"\n";
const TOKEN: &str = "an-admin-token-of-some-length-4f9a";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn overrides_apply_and_print_effective_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "rotagate.toml", BASE);
    let (code, out, err) = rotagate(
        &["check", "--print-effective", "-c", &p],
        &[
            ("ROTAGATE_ADMIN_TOKEN", TOKEN), // a secret variable: no double underscore
            ("ROTAGATE_LISTEN__THREADS", "3"),
            ("ROTAGATE_UPSTREAM__URL", "http://127.0.0.1:4000"),
            ("ROTAGATE_LISTEN__MAX_CONNECTIONS", "77"),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("threads = 3"), "{out}");
    assert!(out.contains("url = \"http://127.0.0.1:4000\""), "{out}");
    assert!(out.contains("max_connections = 77"), "{out}");
    assert!(
        out.contains("listen.threads = ROTAGATE_LISTEN__THREADS"),
        "{out}"
    );
    assert!(
        out.contains("token = \"env:ROTAGATE_ADMIN_TOKEN\""),
        "{out}"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "{out}{err}");
    assert!(out.contains("ok (0 routes)"), "{out}");
}

#[test]
fn an_override_naming_no_key_is_an_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "rotagate.toml", BASE);
    let env = [("ROTAGATE_ADMIN_TOKEN", TOKEN)];
    for (var, what) in [
        ("ROTAGATE_LISTEN__THREDAS", "thredas"),
        ("ROTAGATE_NOPE__X", "nope"),
        ("ROTAGATE_SESSION__VAULT__COOKIEE", "session"),
    ] {
        let mut env = env.to_vec();
        env.push((var, "2"));
        let (code, out, err) = rotagate(&["check", "-c", &p], &env);
        assert_eq!(code, 1, "{var}: {out}{err}");
        assert!(err.contains(var) && err.contains(what), "{var}: {err}");
    }
    // a malformed override name is refused too, by name
    let (code, _, err) = rotagate(
        &["check", "-c", &p],
        &[
            ("ROTAGATE_ADMIN_TOKEN", TOKEN),
            ("ROTAGATE_LISTEN____X", "1"),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("ROTAGATE_LISTEN____X"), "{err}");
}

#[test]
fn secret_keys_take_only_references_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "rotagate.toml", BASE);
    let literal = "a-literal-secret-pasted-into-the-env";
    let (code, out, err) = rotagate(
        &["check", "--print-effective", "-c", &p],
        &[("ROTAGATE_ADMIN__TOKEN", literal)],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("ROTAGATE_ADMIN__TOKEN") && err.contains("admin.token"),
        "{err}"
    );
    assert!(
        !err.contains(literal) && !out.contains(literal),
        "{out}{err}"
    );
    // a reference is fine
    let (code, out, err) = rotagate(
        &["check", "-c", &p],
        &[
            ("ROTAGATE_ADMIN__TOKEN", "env:OTHER_TOKEN"),
            ("OTHER_TOKEN", TOKEN),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn arrays_of_tables_and_wrong_types_are_refused_by_variable() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "rotagate.toml",
        &format!("{BASE}\n[[route]]\nname = \"a\"\nmatch = \"/a\"\n"),
    );
    let env = |var, val| vec![("ROTAGATE_ADMIN_TOKEN", TOKEN), (var, val)];
    let (code, _, err) = rotagate(&["check", "-c", &p], &env("ROTAGATE_ROUTE__0__NAME", "b"));
    assert_eq!(code, 1);
    assert!(
        err.contains("ROTAGATE_ROUTE__0__NAME") && err.contains("array of tables"),
        "{err}"
    );
    let (code, _, err) = rotagate(
        &["check", "-c", &p],
        &env("ROTAGATE_LISTEN__THREADS", "many"),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("ROTAGATE_LISTEN__THREADS") && err.contains("integer"),
        "{err}"
    );
    let (code, _, err) = rotagate(&["check", "-c", &p], &env("ROTAGATE_LISTEN__THREADS", "0"));
    assert_eq!(code, 1, "validation applies to overridden values");
    assert!(
        err.contains("ROTAGATE_LISTEN__THREADS") && err.contains("listen.threads"),
        "{err}"
    );
}

#[test]
fn problems_in_the_file_keep_its_line_numbers_under_overrides() {
    let text = "[listen]\nthreads = 1\n\n[upstream]\nurl = \"http://127.0.0.1:3000\"\nconnect_timeout = \"soon\"\n";
    let overrides = rotagate::config::env::overrides_from([
        ("ROTAGATE_LISTEN__H2C".to_string(), "false".to_string()),
        ("ROTAGATE_LISTEN__THREADS".to_string(), "2".to_string()),
    ])
    .unwrap();
    let e = rotagate::config::parse_with(text, Path::new("f.toml"), &overrides).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("f.toml:6:"), "{shown}");
    assert!(shown.contains("upstream.connect_timeout"), "{shown}");
}

/// A `rotagate run` process (file watching on, as by default).
struct Proc {
    child: Child,
    admin: SocketAddr,
    _lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn start(config: &str, env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["--log-format", "json", "run", "-c", config])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut admin = None;
        while admin.is_none() {
            let line = lines
                .recv_timeout(std::time::Duration::from_secs(30))
                .expect("rotagate announces its listeners");
            admin = line
                .strip_prefix("rotagate: admin listening on http://")
                .map(|a| a.parse().unwrap());
        }
        Proc {
            child,
            admin: admin.unwrap(),
            _lines: lines,
        }
    }

    /// `/config` after more than `attempts` reload attempts (long-poll, bounded).
    async fn status_after(&self, attempts: u64) -> serde_json::Value {
        client()
            .get(format!(
                "http://{}/config?after_attempts={attempts}",
                self.admin
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_override_creates_a_section_for_run() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "rotagate.toml",
        "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n",
    );
    // no [admin] in the file: the override alone turns the admin listener on
    let proc = Proc::start(&p, &[("ROTAGATE_ADMIN__ADDRESS", "127.0.0.1:0")]);
    let s: serde_json::Value = client()
        .get(format!("http://{}/config", proc.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["generation"], 1, "{s}");
}

#[tokio::test]
async fn a_changed_config_file_or_secret_file_reloads_without_sighup() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("admin.token"), TOKEN).unwrap();
    let body = |route: &str| {
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{}\"\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"file:{}\"\n[[route]]\nname = \"{route}\"\nmatch = \"/:path*\"\n",
            up.addr,
            secrets.path().join("admin.token").display()
        )
    };
    let p = write(dir.path(), "rotagate.toml", &body("one"));
    let proc = Proc::start(&p, &[]);

    write(dir.path(), "rotagate.toml", &body("two"));
    let s = proc.status_after(0).await;
    assert_eq!(s["generation"], 2, "{s}");

    // a broken write is refused and the rules in force stay
    write(dir.path(), "rotagate.toml", "[listen]\naddress = 5\n");
    let s = proc.status_after(1).await;
    assert_eq!(s["generation"], 2, "{s}");
    assert!(
        s["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("listen.address"),
        "{s}"
    );

    write(dir.path(), "rotagate.toml", &body("three"));
    let s = proc.status_after(2).await;
    assert_eq!(s["generation"], 3, "{s}");

    // a file the config reads, in another directory
    std::fs::write(
        secrets.path().join("admin.token"),
        format!("{TOKEN}-rotated"),
    )
    .unwrap();
    let s = proc.status_after(3).await;
    assert_eq!(s["generation"], 4, "{s}");
    assert_eq!(s["last_reload_error"], serde_json::Value::Null, "{s}");
}

#[tokio::test]
async fn a_kubernetes_configmap_swap_reloads() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let body = |route: &str| {
        format!(
            "{}[[route]]\nname = \"{route}\"\nmatch = \"/:path*\"\n",
            base_config(up.addr)
        )
    };
    // the layout kubelet's atomic writer makes for a mounted ConfigMap
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/rotagate.toml"), body("one")).unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rotagate.toml", d.join("rotagate.toml")).unwrap();
    let proc = Proc::start(&d.join("rotagate.toml").display().to_string(), &[]);

    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/rotagate.toml"), body("two")).unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();
    let s = proc.status_after(0).await;
    assert_eq!(s["generation"], 2, "{s}");
    assert_eq!(s["last_reload_error"], serde_json::Value::Null, "{s}");

    // a swap to the wrong kind of file is refused, quickly and without reading it:
    // a device that never ends, a FIFO whose open would block
    let swap = |version: &str| {
        std::os::unix::fs::symlink(version, d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    };
    let refused = |attempts: u64| {
        let proc = &proc;
        async move {
            let s = proc.status_after(attempts).await;
            assert_eq!(s["generation"], 2, "{s}");
            let err = s["last_reload_error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(err.contains("not a regular file"), "{s}");
        }
    };
    std::fs::create_dir(d.join("..v3")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.join("..v3/rotagate.toml")).unwrap();
    swap("..v3");
    refused(1).await;
    std::fs::create_dir(d.join("..v4")).unwrap();
    let made = Command::new("mkfifo")
        .arg(d.join("..v4/rotagate.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    swap("..v4");
    refused(2).await;
    // and the watcher is still there for the next real change
    std::fs::create_dir(d.join("..v5")).unwrap();
    std::fs::write(d.join("..v5/rotagate.toml"), body("five")).unwrap();
    swap("..v5");
    let s = proc.status_after(3).await;
    assert_eq!(s["generation"], 3, "{s}");
}

/// A one-shot HTTP server answering `status` to whatever it gets.
fn answer_once(status: u16) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    addr
}

#[tokio::test]
async fn health_exits_0_when_live_and_1_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "rotagate.toml", BASE);
    let proc = Proc::start(&p, &[("ROTAGATE_ADMIN_TOKEN", TOKEN)]);
    let admin = proc.admin.to_string();
    let (code, out, err) = rotagate(&["health", "--admin", &admin], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("healthy"), "{out}");
    let (code, _, _) = rotagate(&["health", "--admin", &format!("http://{admin}/")], &[]);
    assert_eq!(code, 0);
    // from the config file's admin.address (here set by an override to the real port)
    let (code, out, err) = rotagate(
        &["health", "-c", &p],
        &[
            ("ROTAGATE_ADMIN_TOKEN", TOKEN),
            ("ROTAGATE_ADMIN__ADDRESS", &admin),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    let (code, _, err) = rotagate(&["health", "--admin", &answer_once(503).to_string()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("503"), "{err}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (code, _, err) = rotagate(&["health", "--admin", &closed.to_string()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach"), "{err}");
    let (code, _, err) = rotagate(&["health", "--admin", "not an address"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--admin"), "{err}");
}

#[test]
fn the_binary_needs_only_libraries_of_the_runtime_image() {
    let listed = std::fs::read_to_string("deploy/runtime-image.txt").unwrap();
    let image: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(image.contains(&"libc.so.6"), "the list is read");
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_rotagate"))
        .output()
        .expect("ldd (Debian's libc-bin) runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return; // static: needs nothing
    }
    let mut needed = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let first = line.split_whitespace().next().unwrap();
        if first.starts_with("linux-vdso") {
            continue; // the kernel's, not a file
        }
        let name = Path::new(first)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(!line.contains("not found"), "{line}");
        needed.push(name);
    }
    assert!(!needed.is_empty(), "{text}");
    for lib in &needed {
        assert!(
            image.contains(&lib.as_str()),
            "{lib} is not in the runtime image (deploy/runtime-image.txt): {text}"
        );
    }
    // and the Dockerfile uses that image, with the health command and no curl
    let docker = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(
        docker.contains("FROM gcr.io/distroless/cc-debian12:nonroot"),
        "{docker}"
    );
    assert!(docker.contains("rotagate\", \"health\""), "{docker}");
    assert!(!docker.contains("CMD curl"), "{docker}");
}

#[test]
fn a_secret_in_the_wrong_shape_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let session = "[session]\nmode = \"reissue\"\n[session.reissue]\nformat = \"authjs\"\nsecrets = [\"env:AUTH_SECRET\"]\n";
    let p = write(dir.path(), "rotagate.toml", &format!("{BASE}{session}"));
    let literal = "a-literal-auth-secret-pasted-into-the-env-0123";
    let env = [("ROTAGATE_ADMIN_TOKEN", TOKEN), ("AUTH_SECRET", TOKEN)];
    let (code, out, err) = rotagate(&["check", "-c", &p], &env);
    assert_eq!(code, 0, "{out}{err}");
    // an override gives a string where a list of references belongs
    let mut with = env.to_vec();
    with.push(("ROTAGATE_SESSION__REISSUE__SECRETS", literal));
    let (code, out, err) = rotagate(&["check", "--print-effective", "-c", &p], &with);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("ROTAGATE_SESSION__REISSUE__SECRETS"), "{err}");
    assert!(
        !err.contains(literal) && !out.contains(literal),
        "{out}{err}"
    );
    // the same mistake in the file
    let p = write(
        dir.path(),
        "rotagate.toml",
        &format!(
            "{BASE}{}",
            session.replace("[\"env:AUTH_SECRET\"]", &format!("{literal:?}"))
        ),
    );
    let (code, out, err) = rotagate(&["check", "-c", &p], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("session.reissue.secrets"), "{err}");
    assert!(
        !err.contains(literal) && !out.contains(literal),
        "{out}{err}"
    );
}
