//! Vault mode (DESIGN §8): handle verification (target ≤ 5 µs, no store I/O).
//!
//!     cargo bench --bench vault
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(_c: &mut Criterion) {}

criterion_group!(benches, bench);
criterion_main!(benches);
