//! Password hashing and checking with the default argon2 parameters (19 MiB of working memory):
//! `plume::auth::password`, whose working memory is a fresh anonymous mapping per hash, against
//! the `argon2` crate's own hasher, which takes it from the global allocator (and so, after the
//! first hash, reuses memory that is already resident).

use std::hint::black_box;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use criterion::Criterion;
use plume::auth::password::{hash_blocking, verify_blocking};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("password");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    group.bench_function("hash: plume (own mapping)", |b| {
        b.iter(|| hash_blocking(black_box("correct horse")));
    });
    group.bench_function("hash: argon2 crate (global allocator)", |b| {
        b.iter(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(black_box(b"correct horse"), &salt)
                .map(|h| h.to_string())
        });
    });
    // invariant: hashing with the default parameters does not fail.
    let phc = hash_blocking("correct horse").expect("hash");
    group.bench_function("verify: plume (own mapping)", |b| {
        b.iter(|| verify_blocking(black_box("correct horse"), &phc));
    });
    // invariant: `phc` was just produced by `hash_blocking`.
    let parsed = PasswordHash::new(&phc).expect("PHC string");
    group.bench_function("verify: argon2 crate (global allocator)", |b| {
        b.iter(|| Argon2::default().verify_password(black_box(b"correct horse"), &parsed));
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
