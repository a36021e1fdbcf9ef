//! Drop-in for Auth.js (issue 5): cookies made by the real `@auth/core` (v5) and
//! `next-auth` 4 libraries are read and re-issued by the proxy, and what the proxy
//! sends back decodes with those libraries — single and chunked, plain and
//! `__Secure-`, and across a secret rollover.
//!
//! Needs `npm ci --prefix tests/interop` (the test command runs it).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const OLD: &str = "old-auth-secret-old-auth-secret-0000";
const NEW: &str = "new-auth-secret-new-auth-secret-1111";

fn authjs(request: Value) -> Value {
    node_tool("authjs-tool.mjs", "@auth/core", request)
}

fn real_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Case {
    v4: bool,
    cookie: &'static str,
    big: bool,
    /// Secrets the proxy is configured with (first seals); the token is made with `made_with`.
    secrets: &'static [&'static str],
    made_with: &'static str,
}

async fn run(case: Case) {
    let dir = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for (i, s) in case.secrets.iter().enumerate() {
        std::fs::write(dir.path().join(format!("s{i}")), s).unwrap();
        refs.push(format!("\"file:s{i}\""));
    }
    let format = if case.v4 { "authjs-v4" } else { "authjs" };
    let base = case.cookie.trim_start_matches("__Secure-");
    let cfg = format!(
        "[session]\nrotate_every = \"5m\"\n[session.reissue]\nformat = \"{format}\"\ncookie = \"{base}\"\nsecrets = [{}]\n[[route]]\nmatch = \"/:path*\"\n",
        refs.join(", ")
    );
    let h = Harness::start_in(dir, upstream_ok().await, &cfg).await;

    let now = real_now();
    let mut token = json!({"name": "Ada Lovelace", "email": "ada@example.com", "picture": null, "sub": "user-1", "role": "admin", "has_access": true});
    if case.big {
        token["blob"] = Value::String("z".repeat(6000));
    }
    let jwt = if case.v4 {
        authjs(json!({"op": "v4-encode", "secret": case.made_with, "token": token, "maxAge": 30 * 86400}))
    } else {
        authjs(json!({"op": "v5-encode", "secret": case.made_with, "salt": case.cookie, "token": token, "maxAge": 30 * 86400}))
    }["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    // the browser holds it as the library stores it: chunked above the chunk size
    let chunk = if case.v4 { 3933 } else { 3936 };
    let cookie_header = if jwt.len() > chunk {
        jwt.as_bytes()
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| format!("{}.{i}={}", case.cookie, std::str::from_utf8(c).unwrap()))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        format!("{}={jwt}", case.cookie)
    };

    // 10 minutes later the proxy re-mints it
    h.clock.set(now + 600);
    let resp = h
        .client
        .get(h.url("/dashboard"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(!set.is_empty(), "not rotated");
    for c in &set {
        assert!(
            c.starts_with(case.cookie),
            "re-issued under the name it came with: {c}"
        );
        assert_eq!(
            c.contains("Secure"),
            case.cookie.starts_with("__Secure-"),
            "{c}"
        );
        assert!(
            c.contains("Path=/") && c.contains("HttpOnly") && c.contains("SameSite=Lax"),
            "{c}"
        );
    }
    // the upstream sees the new token (chunked as the browser will hold it)
    let up = h.upstream.last().header("cookie").unwrap();
    let mut chunks: Vec<(usize, String)> = Vec::new();
    let mut plain = None;
    for kv in up.split("; ") {
        let (k, v) = kv.split_once('=').unwrap();
        if k == case.cookie {
            plain = Some(v.to_string());
        } else if let Some(i) = k
            .strip_prefix(case.cookie)
            .and_then(|r| r.strip_prefix('.'))
        {
            chunks.push((i.parse().unwrap(), v.to_string()));
        }
    }
    chunks.sort();
    let fresh = plain.unwrap_or_else(|| chunks.iter().map(|(_, v)| v.as_str()).collect());
    assert_ne!(fresh, jwt);
    assert_eq!(case.big, fresh.len() > chunk, "chunking follows the size");
    let browser_view: String = {
        let live: Vec<&String> = set.iter().filter(|c| !c.contains("Max-Age=0")).collect();
        live.iter()
            .map(|c| c.split(';').next().unwrap().split_once('=').unwrap().1)
            .collect()
    };
    assert_eq!(
        browser_view, fresh,
        "Set-Cookie carries the same token the upstream saw"
    );

    // and the library decodes what the proxy made, with the proxy's active secret
    let decoded = if case.v4 {
        authjs(json!({"op": "v4-decode", "secret": case.secrets[0], "jwt": fresh}))
    } else {
        authjs(
            json!({"op": "v5-decode", "secret": [case.secrets[0]], "salt": case.cookie, "jwt": fresh}),
        )
    };
    let p = &decoded["payload"];
    assert!(
        p.is_object(),
        "library could not decode the re-issued token: {decoded}"
    );
    for k in ["name", "email", "sub", "role", "has_access"] {
        assert_eq!(p[k], token[k], "claim {k} preserved");
    }
    assert_eq!(p["iat"], now + 600);
    assert!(p["exp"].as_u64().unwrap() > now + 600);
    assert!(p["jti"].is_string());
    if case.big {
        assert_eq!(p["blob"].as_str().unwrap().len(), 6000);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn authjs_v5_plain() {
    run(Case {
        v4: false,
        cookie: "authjs.session-token",
        big: false,
        secrets: &[NEW],
        made_with: NEW,
    })
    .await;
}

#[tokio::test]
async fn authjs_v5_secure_prefix() {
    run(Case {
        v4: false,
        cookie: "__Secure-authjs.session-token",
        big: false,
        secrets: &[NEW],
        made_with: NEW,
    })
    .await;
}

#[tokio::test]
async fn authjs_v5_chunked() {
    run(Case {
        v4: false,
        cookie: "authjs.session-token",
        big: true,
        secrets: &[NEW],
        made_with: NEW,
    })
    .await;
}

#[tokio::test]
async fn authjs_v5_secret_rollover() {
    run(Case {
        v4: false,
        cookie: "__Secure-authjs.session-token",
        big: false,
        secrets: &[NEW, OLD],
        made_with: OLD,
    })
    .await;
}

#[tokio::test]
async fn next_auth_v4_plain() {
    run(Case {
        v4: true,
        cookie: "next-auth.session-token",
        big: false,
        secrets: &[NEW],
        made_with: NEW,
    })
    .await;
}

#[tokio::test]
async fn next_auth_v4_secure_chunked() {
    run(Case {
        v4: true,
        cookie: "__Secure-next-auth.session-token",
        big: true,
        secrets: &[NEW],
        made_with: NEW,
    })
    .await;
}

#[tokio::test]
async fn next_auth_v4_secret_rollover() {
    run(Case {
        v4: true,
        cookie: "next-auth.session-token",
        big: false,
        secrets: &[NEW, OLD],
        made_with: OLD,
    })
    .await;
}
