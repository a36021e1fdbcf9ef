//! Per-request session work (DESIGN §8): verify + re-mint of the session cookie,
//! measured through `SessionEngine::process` (cookie parsing, verification, time
//! checks, re-minting, Set-Cookie and upstream Cookie building). Target: HS256 ≤ 10 µs.
//! ES256, EdDSA and RS256 are reported too (RSA signing is ~1 ms in any library, which
//! is why rotation is periodic, not per request).
//!
//! `junk_cookies` measures the decision path of an upstream 401 (issue 9 point 5): the
//! merged `Cookie` header read, the session decided, the logout's cookie check and its
//! deletions, for one session cookie and for the same session plus 4,300 junk
//! `session.N` cookies (and, for scale, 4,300 cookies of other names).
//!
//!     cargo bench --bench session

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair};
use rotagate::config::{
    CookieAttributes, KeySpec, Reissue, SameSite, Session, SessionMode, TokenFormat,
};
use rotagate::logout::{self, Target};
use rotagate::secret::Secret;
use rotagate::session::{cookies, SessionEngine};
use serde_json::json;

const NOW: u64 = 1_793_491_200;

fn pem(tag: &str, der: &[u8]) -> Vec<u8> {
    pem::encode(&pem::Pem::new(tag, der.to_vec())).into_bytes()
}

fn spec(alg: &str) -> KeySpec {
    let rng = ring::rand::SystemRandom::new();
    let mut k = KeySpec {
        kid: Some("k1".into()),
        alg: alg.into(),
        secret: None,
        private_key_pem: None,
        public_key_pem: None,
        origin: "bench".into(),
    };
    match alg {
        "HS256" => {
            k.secret = Some(Secret::new(
                b"bench-secret-bench-secret-bench-secret!!".to_vec(),
            ))
        }
        "ES256" => {
            let der = EcdsaKeyPair::generate_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .expect("keygen");
            k.private_key_pem = Some(Secret::new(pem("PRIVATE KEY", der.as_ref())));
        }
        "EdDSA" => {
            let der = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
            k.private_key_pem = Some(Secret::new(pem("PRIVATE KEY", der.as_ref())));
        }
        _ => {
            // ring cannot generate RSA keys; Node's crypto can
            let out = std::process::Command::new("node")
                .args(["-e", "process.stdout.write(require('crypto').generateKeyPairSync('rsa',{modulusLength:2048}).privateKey.export({type:'pkcs8',format:'pem'}))"])
                .output()
                .expect("node is installed");
            k.private_key_pem = Some(Secret::new(out.stdout));
        }
    }
    k
}

fn authjs_engine(format: TokenFormat) -> SessionEngine {
    let s = Session {
        rotate_every: Duration::ZERO,
        absolute_timeout: Duration::from_secs(30 * 86_400),
        idle_timeout: None,
        leeway: Duration::from_secs(15),
        mode: SessionMode::Reissue(Reissue {
            cookie: if format == TokenFormat::Authjs {
                "authjs.session-token".into()
            } else {
                "next-auth.session-token".into()
            },
            format,
            attributes: CookieAttributes {
                path: "/".into(),
                domain: None,
                secure: false,
                http_only: true,
                same_site: SameSite::Lax,
            },
            chunk_size: 3936,
            keys: vec![],
            secrets: vec![Secret::new(
                b"bench-auth-secret-bench-auth-secret!!".to_vec(),
            )],
            require_exp: true,
            issuer: None,
            audience: None,
        }),
    };
    SessionEngine::new(&s).expect("engine")
}

fn engine(alg: &str) -> SessionEngine {
    let s = Session {
        // every request is due: this measures the rotation path itself
        rotate_every: Duration::ZERO,
        absolute_timeout: Duration::from_secs(12 * 3600),
        idle_timeout: None,
        leeway: Duration::from_secs(30),
        mode: SessionMode::Reissue(Reissue {
            cookie: "session".into(),
            format: TokenFormat::Jwt,
            attributes: CookieAttributes {
                path: "/".into(),
                domain: None,
                secure: true,
                http_only: true,
                same_site: SameSite::Lax,
            },
            chunk_size: 3936,
            keys: vec![spec(alg)],
            secrets: vec![],
            require_exp: true,
            issuer: None,
            audience: None,
        }),
    };
    SessionEngine::new(&s).expect("engine")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("session_verify_and_remint");
    for alg in ["HS256", "ES256", "EdDSA", "RS256"] {
        let e = engine(alg);
        let claims = json!({"sub": "u1", "name": "Ada Lovelace", "email": "ada@example.com", "roles": ["reader", "writer"], "iat": NOW - 600, "exp": NOW + 3000});
        let token = e
            .seal(claims.as_object().expect("object"), "session")
            .expect("seal");
        let cookie = format!("theme=dark; session={token}; other=1");
        assert_eq!(
            e.process(Some(&cookie), NOW, true).outcome.as_str(),
            "rotated",
            "{alg}: setup must rotate"
        );
        if alg == "RS256" {
            g.sample_size(20).measurement_time(Duration::from_secs(3));
        }
        g.bench_function(alg, |b| {
            b.iter(|| black_box(e.process(black_box(Some(&cookie)), NOW, true)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("authjs_open_and_reseal");
    for (label, format, cookie) in [
        ("authjs_v5", TokenFormat::Authjs, "authjs.session-token"),
        (
            "authjs_v4",
            TokenFormat::AuthjsV4,
            "next-auth.session-token",
        ),
    ] {
        let e = authjs_engine(format);
        let claims = json!({"name": "Ada Lovelace", "email": "ada@example.com", "picture": "https://example.com/a.png", "sub": "8d1e0c0a-2f4b-4bb4-9d55-0c4a9e3f1a2b", "iat": NOW - 600, "exp": NOW + 86_400, "jti": "4f1c"});
        let token = e
            .seal(claims.as_object().expect("object"), cookie)
            .expect("seal");
        let header = format!("theme=dark; {cookie}={token}");
        assert_eq!(
            e.process(Some(&header), NOW, true).outcome.as_str(),
            "rotated",
            "{label}: setup must rotate"
        );
        g.bench_function(label, |b| {
            b.iter(|| black_box(e.process(black_box(Some(&header)), NOW, true)))
        });
    }
    g.finish();
}

/// What the proxy does for a request whose upstream answers 401: merge the `Cookie`
/// fields and decide the session (request phase), then merge again, check that a
/// session cookie was carried and build the deletions (logout phase).
fn upstream_401_path(
    e: &SessionEngine,
    targets: &[Target],
    headers: &http::HeaderMap,
) -> (rotagate::session::Decision, Vec<String>) {
    let cookie = rotagate::hygiene::merged_cookie(headers);
    // this engine re-mints on every request; the measured session is not due (as in
    // the end-to-end test), so rotation is off here
    let decision = e.process(cookie.as_deref(), NOW, false);
    let cookie = rotagate::hygiene::merged_cookie(headers).unwrap_or_default();
    let (pairs, _) = cookies::pairs_bounded(&cookie, cookies::MAX_COOKIES);
    let deletions = if logout::carries_any(&pairs, targets) {
        logout::deletions(&pairs, targets)
    } else {
        Vec::new()
    };
    (decision, deletions)
}

fn junk(c: &mut Criterion) {
    let e = engine("HS256");
    let claims = json!({"sub": "u1", "name": "Ada Lovelace", "email": "ada@example.com", "iat": NOW, "exp": NOW + 3000});
    let token = e
        .seal(claims.as_object().expect("object"), "session")
        .expect("seal");
    // as the end-to-end test configures it: max_header_bytes raised to fit the junk
    let targets = [Target {
        name: "session".into(),
        attributes: CookieAttributes {
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        },
        max_chunks: cookies::max_valid_chunks(131_072, 3936),
    }];
    let header = |extra: &dyn Fn(usize) -> String| {
        let mut v = format!("session={token}");
        for i in 0..4300 {
            v.push_str("; ");
            v.push_str(&extra(i));
        }
        v
    };
    let cases = [
        ("one_cookie", format!("session={token}")),
        ("4300_junk_chunks", header(&|i| format!("session.{i}=x"))),
        ("4300_other_cookies", header(&|i| format!("c{i}=x"))),
    ];
    let mut g = c.benchmark_group("junk_cookies");
    for (label, value) in &cases {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_str(value).expect("header"),
        );
        let (d, dels) = upstream_401_path(&e, &targets, &headers);
        assert_eq!(d.outcome.as_str(), "valid", "{label}: the session verifies");
        assert!(dels.len() <= 40, "{label}: {} deletions", dels.len());
        g.bench_function(*label, |b| {
            b.iter(|| black_box(upstream_401_path(&e, &targets, black_box(&headers))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, junk);
criterion_main!(benches);
