//! The floor of what pingora costs: a reverse proxy built only from pingora's own
//! `Server`, listener and `http_proxy_service`, with no hooks but the one that names
//! the upstream. `benches/load/run.py` starts it next to rotagate and nginx.
//!
//! ```text
//! cargo build --release --bench bare_pingora
//! target/release/deps/bare_pingora-* --listen 127.0.0.1:8001 --upstream 127.0.0.1:8000 [--threads 1]
//! ```
//!
//! Run without `--listen` (as `cargo bench` and `cargo test --all-targets` do), it only
//! says what it is and exits.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

/// No per-request state, no hooks: pingora's defaults do the rest.
struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (arg(&args, "--listen"), arg(&args, "--upstream")) else {
        println!(
            "bare_pingora: the load comparison's bare pingora proxy; run by benches/load/run.py"
        );
        return;
    };
    let upstream = upstream.parse().expect("--upstream: an IP:port");
    let threads = arg(&args, "--threads").map_or(1, |t| t.parse().expect("--threads: a number"));
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Bare { upstream });
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
