//! `rotagate demo` starts and its flow works: log in, see the protected page through
//! the proxy, and the app's API answers 401 without a session.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn demo_runs_and_logs_in() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["demo", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut proxy = None;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if line.contains("<- open this") {
            proxy = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
            break;
        }
    }
    let proxy = proxy.expect("demo printed the proxy URL");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let resp = c
        .post(format!("{proxy}/login"))
        .form(&[("user", "grace")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("demo_session="));

    let page = c
        .get(format!("{proxy}/protected"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("grace"));

    let api = c.get(format!("{proxy}/api/whoami")).send().await.unwrap();
    assert_eq!(api.status(), 401);

    // a backend 401 becomes a clean logout
    let out = c
        .get(format!("{proxy}/expire"))
        .header("cookie", &cookie)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], "/login?callbackUrl=/expire");
    assert!(out
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("demo_session=; ")));
    drop(guard);
}

#[tokio::test]
async fn demo_vault_holds_only_the_handle_and_two_tabs_stay_logged_in() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["demo", "--port", "0", "--vault"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let guard = Kill(child);
    let mut proxy = None;
    let mut printed = String::new();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("<- open this") {
            proxy = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(str::to_string);
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    let proxy = proxy.expect("demo printed the proxy URL");
    assert!(
        printed.contains("curl"),
        "the replay commands are printed: {printed}"
    );
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = c
        .post(format!("{proxy}/login"))
        .form(&[("user", "grace")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let lines: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    // the browser gets only the handle, never the app's token
    assert!(
        lines.iter().all(|l| !l.starts_with("demo_session=")),
        "{lines:?}"
    );
    let handle = lines
        .iter()
        .find(|l| l.starts_with("rg="))
        .expect("the handle")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // two tabs: the app sees its session on each
    for _ in 0..2 {
        let page = c
            .get(format!("{proxy}/protected"))
            .header("cookie", &handle)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("grace"));
    }
    drop(guard);
}
