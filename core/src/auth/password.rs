//! Password hashing with argon2 (Argon2id, default parameters, a random salt per hash).
//!
//! Both functions run the hash on tokio's blocking pool: it costs tens of milliseconds of CPU
//! and must not stall the async workers.
//!
//! The working memory of one hash (19 MiB with the default parameters) is an anonymous memory
//! mapping of its own, unmapped as soon as the hash is computed, instead of an allocation from
//! the global allocator: allocators keep freed memory of that size resident (glibc raises its
//! mmap threshold after the first free; mimalloc returns freed pages after a delay, and only
//! when a later allocation gets around to it), so a single login could leave the process 19 MiB
//! larger (38 MiB under glibc) for as long as it stayed idle. The PHC strings and the
//! verification are those of the `argon2` crate's `PasswordHasher` and `PasswordVerifier` (the
//! tests check both ways).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Decimal, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// The most hashes (and checks) waiting for a free core at once; more are TooManyRequests.
pub const MAX_WAITING: usize = 256;

/// One hash per core runs at once: each costs 19 MiB and a core for tens of milliseconds, so
/// more at once would only add memory, not throughput.
static RUNNING: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(max_running())));

static WAITING: AtomicUsize = AtomicUsize::new(0);

/// The number of hashes that may run at once (the number of cores).
pub fn max_running() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A place in the queue of [`MAX_WAITING`]; dropping it leaves the queue.
struct Waiting;

impl Waiting {
    fn enter() -> Result<Self> {
        WAITING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITING).then_some(n + 1)
            })
            .map(|_| Waiting)
            .map_err(|_| {
                Error::too_many_requests("Too many password checks in progress; try again later")
            })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Run `work` on the blocking pool once a core is free. The permit moves into the blocking
/// task, so a caller that gives up does not free its core before the hash is done.
async fn throttled<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let waiting = Waiting::enter()?;
    let permit = RUNNING
        .clone()
        .acquire_owned()
        .await
        .map_err(Error::internal)?;
    drop(waiting);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(Error::internal)?
}

/// Hash a password; returns a PHC string (`$argon2id$v=19$...`).
///
/// At most one hash or check per core runs at once ([`max_running`]); up to [`MAX_WAITING`]
/// more wait for a core, and beyond that the call is TooManyRequests (429). So a flood of
/// logins costs at most `cores × 19 MiB` of argon2 memory.
pub async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    throttled(move || hash_blocking(&password)).await
}

/// Check a password against a PHC hash string. `Ok(false)` for a wrong password; a
/// BadRequest when `hash` is not a valid PHC string. Throttled as [`hash`].
pub async fn verify(password: &str, hash: &str) -> Result<bool> {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    throttled(move || verify_blocking(&password, &hash)).await
}

/// A hash of a fixed password, computed once: checking against it costs what a real check
/// costs (the `local` strategy uses it for unknown users).
pub(crate) async fn dummy_hash() -> Result<&'static str> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| hash("plume: no such user"))
        .await
        .map(String::as_str)
}

/// [`hash`] on the current thread.
pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let (algorithm, version, params) =
        (Algorithm::default(), Version::default(), Params::default());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = compute(
        algorithm,
        version,
        &params,
        password.as_bytes(),
        salt.as_salt(),
        output_len,
    )
    .map_err(Failure::into_internal)?;
    let phc = PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(Decimal::from(version)),
        params: ParamsString::try_from(&params).map_err(Error::internal)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// [`verify`] on the current thread.
pub fn verify_blocking(password: &str, hash: &str) -> Result<bool> {
    let invalid =
        |e: argon2::password_hash::Error| Error::bad_request(format!("invalid password hash: {e}"));
    let parsed = PasswordHash::new(hash).map_err(invalid)?;
    // As `PasswordVerifier::verify_password`: a hash without salt or output matches nothing.
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(invalid)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| invalid(e.into()))?
        .unwrap_or_default();
    // Sets the output length to the expected one, as argon2's verifier does.
    let params = Params::try_from(&parsed).map_err(invalid)?;
    // The PHC string the verifier would build must be valid too.
    ParamsString::try_from(&params).map_err(invalid)?;
    let computed = compute(
        algorithm,
        version,
        &params,
        password.as_bytes(),
        salt,
        expected.len(),
    )
    .map_err(|failure| match failure {
        Failure::Hash(e) => invalid(e),
        Failure::Memory(e) => Error::internal(e),
    })?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// Why [`compute`] failed.
#[derive(Debug)]
enum Failure {
    /// The inputs (salt, parameters) are not acceptable to argon2.
    Hash(argon2::password_hash::Error),
    /// The working memory could not be mapped.
    Memory(std::io::Error),
}

impl Failure {
    fn into_internal(self) -> Error {
        match self {
            Self::Hash(e) => Error::internal(e),
            Self::Memory(e) => Error::internal(e),
        }
    }
}

/// The argon2 output for `password` and `salt`, computed as `Argon2::hash_password` does
/// (salt decoded from B64 into at most 64 bytes, `output_len` bytes of output), with the
/// working memory in a [`BlockMemory`].
fn compute(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &[u8],
    salt: Salt<'_>,
    output_len: usize,
) -> std::result::Result<Output, Failure> {
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_buf).map_err(Failure::Hash)?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut memory = BlockMemory::new(params.block_count()).map_err(Failure::Memory)?;
    Output::init_with(output_len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, memory.blocks())?)
    })
    .map_err(Failure::Hash)
}

/// Argon2 working memory: `len` zeroed blocks in an anonymous memory mapping of their own,
/// given back to the operating system when dropped.
struct BlockMemory {
    map: memmap2::MmapMut,
    len: usize,
}

impl BlockMemory {
    fn new(len: usize) -> std::io::Result<Self> {
        let bytes = len
            .checked_mul(size_of::<Block>())
            .ok_or_else(|| std::io::Error::other("argon2 memory size overflows"))?;
        // At least one byte: a mapping of length 0 is an error.
        let map = memmap2::MmapMut::map_anon(bytes.max(1))?;
        // Transparent huge pages where the kernel offers them: ten page faults instead of
        // 4,864 for the default 19 MiB, which brings a hash from about 20 ms back to the 15 ms
        // of a hash in already-resident heap memory (`cargo bench -p plume --bench password`).
        // Only a hint: without THP the mapping works the same with small pages.
        let _ = map.advise(memmap2::Advice::HugePage);
        // A mapping starts on a page boundary (4 KiB or more), which the 64-byte alignment of
        // `Block` divides; checked rather than assumed, since the cast below relies on it.
        if map.as_ptr().align_offset(align_of::<Block>()) != 0 {
            return Err(std::io::Error::other("argon2 memory mapping is misaligned"));
        }
        Ok(Self { map, len })
    }

    #[allow(unsafe_code)]
    fn blocks(&mut self) -> &mut [Block] {
        let ptr = self.map.as_mut_ptr().cast::<Block>();
        // SAFETY: the mapping is `len * size_of::<Block>()` bytes long (or one byte when `len`
        // is 0), starts at an address aligned for `Block` (checked in `new`), and is readable,
        // writable and initialized (an anonymous mapping reads as zeros). `Block` is a plain
        // array of `u64`, for which any bytes, zeros included, are a valid value. The slice
        // borrows `self` mutably, so nothing else reads or writes the mapping while it lives,
        // and the mapping is unmapped only when `self` is dropped.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    use proptest::prelude::*;

    use super::*;

    fn standard() -> Argon2<'static> {
        Argon2::default()
    }

    #[test]
    fn a_hash_has_the_default_phc_form_and_passes_the_argon2_verifier() {
        let phc = hash_blocking("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert_eq!(parsed.hash.map(|h| h.len()), Some(32));
        assert!(
            standard()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert_eq!(
            standard().verify_password(b"correct horsE", &parsed),
            Err(argon2::password_hash::Error::Password)
        );
        // A fresh salt each time.
        assert_ne!(hash_blocking("correct horse").unwrap(), phc);
    }

    #[test]
    fn a_hash_of_the_argon2_hasher_passes_verify_blocking() {
        let salt = SaltString::generate(&mut OsRng);
        let phc = standard()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_blocking("battery staple", &phc).unwrap());
        assert!(!verify_blocking("battery stapler", &phc).unwrap());
        assert!(!verify_blocking("", &phc).unwrap());
    }

    #[test]
    fn the_output_equals_the_argon2_hasher_output_for_the_same_salt() {
        let salt = SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let ours = compute(
            Algorithm::default(),
            Version::default(),
            &Params::default(),
            b"pw",
            salt.as_salt(),
            Params::DEFAULT_OUTPUT_LEN,
        )
        .unwrap();
        let theirs = standard().hash_password(b"pw", &salt).unwrap();
        assert_eq!(Some(ours), theirs.hash);
    }

    #[test]
    fn malformed_and_foreign_hashes_are_bad_requests_and_incomplete_ones_match_nothing() {
        for bad in [
            "",
            "plain",
            "$argon2id$v=19$m=19456,t=2,p=1$!!!$xx",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=7$m=64,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=1,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=64,t=1,p=1,x=2$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            let err = verify_blocking("pw", bad).unwrap_err();
            assert_eq!(err.code(), 400, "{bad}: {err:?}");
        }
        // Salt but no output: the argon2 verifier says "wrong password", so do we.
        assert!(!verify_blocking("pw", "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ").unwrap());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// For any small parameters, algorithm, version and output length, the PHC strings of
        /// either side verify on the other, and both verifiers agree on a wrong password.
        #[test]
        fn both_verifiers_agree_for_any_parameters(
            m in 8u32..96,
            t in 1u32..4,
            p in 1u32..4,
            out_len in 10usize..65,
            algorithm in prop::sample::select(vec![Algorithm::Argon2d, Algorithm::Argon2i, Algorithm::Argon2id]),
            version in prop::sample::select(vec![Version::V0x10, Version::V0x13]),
            password in "\\PC{0,24}",
            other in "\\PC{0,24}",
        ) {
            let params = Params::new(m.max(8 * p), t, p, Some(out_len)).unwrap();
            let argon2 = Argon2::new(algorithm, version, params.clone());
            let salt = SaltString::generate(&mut OsRng);
            let theirs = argon2.hash_password(password.as_bytes(), &salt).unwrap();
            let output = compute(algorithm, version, &params, password.as_bytes(), salt.as_salt(), out_len).unwrap();
            prop_assert_eq!(Some(output), theirs.hash);
            let phc = theirs.to_string();
            prop_assert!(verify_blocking(&password, &phc).unwrap());
            let ours = verify_blocking(&other, &phc).unwrap();
            let standard = argon2.verify_password(other.as_bytes(), &theirs).is_ok();
            prop_assert_eq!(ours, standard);
            prop_assert_eq!(ours, other == password);
        }
    }
}
