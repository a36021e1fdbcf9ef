//! Interoperability with the real `jose` npm package, both directions, for HS256,
//! RS256, ES256 and EdDSA: a token jose signs is accepted and re-minted by the proxy,
//! and the token the proxy mints verifies with jose.
//!
//! Needs `npm ci --prefix tests/interop` (the test command runs it).

mod common;

use common::*;
use serde_json::{json, Value};

fn jose(request: Value) -> Value {
    node_tool("jose-tool.mjs", "jose", request)
}

async fn round_trip(alg: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (sign_key, verify_key, key_config) = if alg == "HS256" {
        let secret = "jose-interop-secret-jose-interop-secret-42";
        std::fs::write(dir.path().join("secret"), secret).unwrap();
        (
            json!({"secret": secret}),
            json!({"secret": secret}),
            "secret = \"file:secret\"".to_string(),
        )
    } else {
        let kind = match alg {
            "RS256" => "rsa",
            "ES256" => "ec",
            _ => "ed25519",
        };
        let (private, public) = node_keypair(kind);
        std::fs::write(dir.path().join("private.pem"), &private).unwrap();
        std::fs::write(dir.path().join("public.pem"), &public).unwrap();
        (
            json!({"pem": private}),
            json!({"pem": public}),
            "private_key = \"file:private.pem\"\npublic_key = \"file:public.pem\"".to_string(),
        )
    };
    let cfg = format!(
        "[session]\nrotate_every = \"5m\"\n[session.reissue]\ncookie = \"session\"\n[[session.reissue.keys]]\nkid = \"k1\"\nalg = \"{alg}\"\n{key_config}\n[[route]]\nmatch = \"/:path*\"\n"
    );
    let h = Harness::start_in(dir, upstream_ok().await, &cfg).await;

    // jose -> rotagate: a token jose signs is accepted...
    let claims = json!({"sub": "user-7", "roles": ["a", "b"], "org": {"tier": "gold"}, "iat": T0, "exp": T0 + 7200, "jti": "first"});
    let token =
        jose(json!({"op": "sign", "alg": alg, "kid": "k1", "key": sign_key, "claims": claims}))
            ["token"]
            .as_str()
            .unwrap()
            .to_string();
    h.clock.set(T0 + 600);
    let resp = h
        .client
        .get(h.url("/page"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // ...and re-minted: the upstream sees the new token on this very request
    let up = h.upstream.last().header("cookie").unwrap();
    let fresh = up.strip_prefix("session=").unwrap().to_string();
    assert_ne!(fresh, token, "{alg}: not rotated");
    let set_cookie = resp.headers().get("set-cookie").unwrap().to_str().unwrap();
    assert!(
        set_cookie.starts_with(&format!("session={fresh};")),
        "{alg}"
    );

    // rotagate -> jose: the token rotagate minted verifies with jose
    let v = jose(
        json!({"op": "verify", "alg": alg, "key": verify_key, "token": fresh, "now": T0 + 600}),
    );
    assert_eq!(v["header"]["alg"], alg);
    assert_eq!(v["header"]["kid"], "k1");
    let c = &v["claims"];
    assert_eq!(c["sub"], "user-7");
    assert_eq!(c["roles"], json!(["a", "b"]));
    assert_eq!(c["org"]["tier"], "gold");
    assert_eq!(c["iat"], T0 + 600);
    assert_eq!(c["exp"], T0 + 600 + 7200);
    assert_ne!(c["jti"], "first");
    h.shutdown().await;
}

#[tokio::test]
async fn jose_interop_hs256() {
    round_trip("HS256").await;
}

#[tokio::test]
async fn jose_interop_rs256() {
    round_trip("RS256").await;
}

#[tokio::test]
async fn jose_interop_es256() {
    round_trip("ES256").await;
}

#[tokio::test]
async fn jose_interop_eddsa() {
    round_trip("EdDSA").await;
}
