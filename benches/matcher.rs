//! Route matching cost as rules grow (DESIGN §8: ≤ 2 µs at 1,000 rules, ≤ 2× the
//! 10-rule time).
//!
//!     cargo bench --bench matcher

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::HeaderMap;
use rotagate::matcher::{MatcherSpec, NextOptions, RequestParts, RuleSet, SourceSpec};

/// `n` distinct realistic rules: section wildcards, typed ids, static pages, and a
/// catch-all with the Next lookahead idiom at the end.
fn rules(n: usize) -> Vec<MatcherSpec> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n - 1 {
        let source = match i % 4 {
            0 => format!("/section{i}/:path*"),
            1 => format!("/items{i}/:id(\\d+)"),
            2 => format!("/page{i}"),
            _ => format!("/api/v{i}/:resource/:id?"),
        };
        out.push(MatcherSpec {
            sources: vec![SourceSpec {
                source,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    out.push(MatcherSpec {
        sources: vec![SourceSpec {
            source: "/((?!api|_next/static|_next/image|favicon.ico).*)".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    out
}

fn bench(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route_match");
    for n in [10usize, 100, 1000] {
        let set = RuleSet::build(&rules(n), &NextOptions::default()).expect("rules compile");
        // a hit on the last section rule, a data route, and a miss that falls to the catch-all
        let last = (n - 2) / 4 * 4;
        let paths = [
            format!("/section{last}/a/b"),
            format!("/_next/data/b1/page{}.json", 2),
            "/nothing/here".to_string(),
        ];
        g.bench_with_input(BenchmarkId::from_parameter(n), &paths, |b, paths| {
            b.iter(|| {
                for p in paths {
                    let req = RequestParts {
                        method: "GET",
                        host: Some("app.test"),
                        path: p,
                        query: None,
                        headers: &headers,
                    };
                    black_box(set.first_match(black_box(&req)));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
