//! Password hashing (argon2id, PHC strings) on a pool of its own, and the
//! password policy.
//!
//! Each hash holds `memory_kib` of memory and a core for tens of
//! milliseconds, so hashes never run on the async workers: a fixed set of
//! low-priority threads takes them from a bounded queue. A flood of
//! password attempts therefore costs at most `threads × memory_kib`, waits
//! in a queue of known length (or is refused with 429), and leaves the
//! async workers, and the passkey sign-ins they serve, free.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};

use anyhow::{Context, anyhow};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::config::PasswordSettings;
use crate::domain::Password;
use crate::error::{ApiError, Result};

/// The 30,000 most common passwords (zxcvbn's list; see assets/README.md).
static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("../../assets/common-passwords.txt").lines().collect());

type Job = Box<dyn FnOnce() + Send>;

/// What checking a password found.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Wrong,
    Right,
    /// Right, and here is a hash of it with the current parameters.
    RightRehashed(String),
}

pub struct PasswordHasher {
    params: Params,
    jobs: mpsc::Sender<Job>,
    queued: Arc<AtomicI64>,
    /// A hash of a random password, checked when the account has no
    /// password, so that both cases take the same time.
    dummy: OnceCell<String>,
    settings: PasswordSettings,
}

impl PasswordHasher {
    pub fn new(settings: &PasswordSettings) -> anyhow::Result<PasswordHasher> {
        let params =
            Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
                .map_err(|e| anyhow!("password: argon2 parameters refused: {e}"))?;
        let (jobs, receiver) = mpsc::channel::<Job>(settings.max_queued_hashes);
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        let queued = Arc::new(AtomicI64::new(0));
        for n in 0..settings.max_concurrent_hashes {
            let receiver = receiver.clone();
            let queued = queued.clone();
            std::thread::Builder::new()
                .name(format!("passgate-hash-{n}"))
                .spawn(move || hash_worker(&receiver, &queued))
                .context("cannot start a password hashing thread")?;
        }
        Ok(PasswordHasher {
            params,
            jobs,
            queued,
            dummy: OnceCell::new(),
            settings: settings.clone(),
        })
    }

    /// Checks waiting for a hashing thread.
    pub fn queue_depth(&self) -> i64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Runs `work` on the hashing pool; 429 when the queue is full.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.try_send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::RateLimited { retry_after_secs: 1 });
        }
        result.await.map_err(|_| ApiError::Internal(anyhow!("password hashing thread ended")))
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// A PHC string of `password` with the current parameters.
    pub async fn hash(&self, password: &Password) -> Result<String> {
        let argon2 = self.argon2();
        let password = password.clone();
        self.run(move || phc_hash(&argon2, password.expose().as_bytes()))
            .await?
            .map_err(ApiError::Internal)
    }

    /// Checks `password` against `stored`, or against a dummy hash when
    /// there is none (same cost, same answer as a wrong password).
    pub async fn check(&self, password: &Password, stored: Option<&str>) -> Result<Checked> {
        let stored = match stored {
            Some(phc) => Some(phc.to_owned()),
            None => {
                self.dummy().await?;
                None
            }
        };
        let dummy = self.dummy.get().cloned().unwrap_or_default();
        let current = self.argon2();
        let password = password.clone();
        let is_real = stored.is_some();
        let phc = stored.unwrap_or(dummy);
        self.run(move || -> anyhow::Result<Checked> {
            let parsed = PasswordHash::new(&phc).map_err(|e| anyhow!("stored hash: {e}"))?;
            // The stored string decides algorithm and cost, so hashes made
            // with older parameters keep verifying.
            let right = phc_verify(password.expose().as_bytes(), &parsed)?;
            if !(right && is_real) {
                return Ok(Checked::Wrong);
            }
            let cost = |p: &Params| (p.m_cost(), p.t_cost(), p.p_cost());
            let outdated = parsed.algorithm.as_str() != "argon2id"
                || Params::try_from(&parsed).ok().as_ref().map(cost)
                    != Some(cost(current.params()));
            if !outdated {
                return Ok(Checked::Right);
            }
            Ok(Checked::RightRehashed(phc_hash(&current, password.expose().as_bytes())?))
        })
        .await?
        .map_err(ApiError::Internal)
    }

    async fn dummy(&self) -> Result<()> {
        self.dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
                let throwaway = Password::from(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    random,
                ));
                self.hash(&throwaway).await
            })
            .await
            .map(|_| ())
    }

    /// NIST SP 800-63B §3.1.1.2: length bounds, not on the list of common
    /// passwords, not the username; no composition rules.
    pub fn check_policy(&self, password: &Password, username: &str) -> Result<()> {
        let text = password.expose();
        let length = text.chars().count();
        let refuse = |why: String| Err(ApiError::ValidationFailed(format!("password: {why}")));
        if length < self.settings.min_length {
            return refuse(format!("must be at least {} characters", self.settings.min_length));
        }
        if length > self.settings.max_length {
            return refuse(format!("must be at most {} characters", self.settings.max_length));
        }
        let lower = text.to_lowercase();
        if COMMON.contains(lower.as_str()) {
            return refuse("is one of the most common passwords; choose another".into());
        }
        if lower == username.to_lowercase() {
            return refuse("must not be the username".into());
        }
        Ok(())
    }
}

thread_local! {
    /// A hashing thread's argon2 memory, kept between hashes: allocating
    /// it per hash (19 MiB then) left glibc's arenas holding several times that
    /// (measured: 113 MiB of RSS after 40 sign-ins), and costs page faults.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 in this thread's kept memory, grown when a hash needs more.
fn with_memory<T>(argon2: &Argon2<'_>, run: impl FnOnce(&mut [Block]) -> T) -> T {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let needed = argon2.params().block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        run(&mut blocks[..])
    })
}

/// A PHC string of `password` with a fresh salt.
fn phc_hash(argon2: &Argon2<'_>, password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes =
        salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| anyhow!("salt: {e}"))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    with_memory(argon2, |blocks| {
        argon2.hash_password_into_with_memory(password, salt_bytes, &mut out, blocks)
    })
    .map_err(|e| anyhow!("argon2: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| anyhow!("argon2: {e}"))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` is the one `stored` was made from (constant-time).
fn phc_verify(password: &[u8], stored: &PasswordHash<'_>) -> anyhow::Result<bool> {
    let (Some(salt), Some(expected)) = (stored.salt, stored.hash) else {
        return Ok(false);
    };
    let algorithm =
        Algorithm::try_from(stored.algorithm).map_err(|e| anyhow!("stored hash: {e}"))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow!("stored hash: {e}"))?
        .unwrap_or_default();
    let params = Params::try_from(stored).map_err(|e| anyhow!("stored hash: {e}"))?;
    let argon2 = Argon2::new(algorithm, version, params);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| anyhow!("stored salt: {e}"))?;
    let mut out = vec![0u8; expected.len()];
    with_memory(&argon2, |blocks| {
        argon2.hash_password_into_with_memory(password, salt_bytes, &mut out, blocks)
    })
    .map_err(|e| anyhow!("argon2: {e}"))?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

fn hash_worker(receiver: &std::sync::Mutex<mpsc::Receiver<Job>>, queued: &AtomicI64) {
    lower_this_threads_priority();
    loop {
        let job = match receiver.lock() {
            Ok(mut jobs) => jobs.blocking_recv(),
            Err(_) => return,
        };
        let Some(job) = job else { return };
        queued.fetch_sub(1, Ordering::Relaxed);
        job();
    }
}

/// Under CPU contention the scheduler then prefers the async workers (and
/// so passkey sign-ins) over password hashing. Linux applies nice(2) to
/// the calling thread only.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: nice(2) takes a plain integer and touches no memory.
    unsafe {
        libc::nice(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(memory_kib: u32) -> PasswordSettings {
        PasswordSettings {
            memory_kib,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 1,
            max_queued_hashes: 4,
            min_length: 8,
            max_length: 64,
        }
    }

    fn pw(text: &str) -> Password {
        Password::from(text.to_owned())
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_with_the_configured_parameters() {
        let hasher = PasswordHasher::new(&settings(64)).unwrap();
        let phc = hasher.hash(&pw("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert_eq!(hasher.check(&pw("correct horse"), Some(&phc)).await.unwrap(), Checked::Right);
        assert_eq!(hasher.check(&pw("correct horsE"), Some(&phc)).await.unwrap(), Checked::Wrong);
        assert_eq!(hasher.check(&pw("correct horse"), None).await.unwrap(), Checked::Wrong);
    }

    #[tokio::test]
    async fn hashes_agree_with_the_argon2_crates_own_phc_functions() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(64, 1, 1, None).unwrap();
        let library = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let theirs = library.hash_password(b"correct horse", &salt).unwrap().to_string();
        let hasher = PasswordHasher::new(&settings(64)).unwrap();
        assert_eq!(
            hasher.check(&pw("correct horse"), Some(&theirs)).await.unwrap(),
            Checked::Right
        );
        assert_eq!(
            hasher.check(&pw("correct horsE"), Some(&theirs)).await.unwrap(),
            Checked::Wrong
        );
        let ours = hasher.hash(&pw("correct horse")).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(library.verify_password(b"correct horse", &parsed).is_ok());
        assert!(library.verify_password(b"correct horsE", &parsed).is_err());
    }

    #[tokio::test]
    async fn a_hash_with_old_parameters_is_remade_on_a_right_password_only() {
        let old =
            PasswordHasher::new(&settings(32)).unwrap().hash(&pw("correct horse")).await.unwrap();
        let hasher = PasswordHasher::new(&settings(64)).unwrap();
        assert_eq!(hasher.check(&pw("wrong horse"), Some(&old)).await.unwrap(), Checked::Wrong);
        let Checked::RightRehashed(fresh) =
            hasher.check(&pw("correct horse"), Some(&old)).await.unwrap()
        else {
            panic!("expected a re-hash");
        };
        assert!(fresh.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{fresh}");
        assert_eq!(hasher.check(&pw("correct horse"), Some(&fresh)).await.unwrap(), Checked::Right);
    }

    #[tokio::test]
    async fn a_full_queue_answers_429_instead_of_growing() {
        let mut config = settings(8 * 1024);
        config.iterations = 3;
        config.max_queued_hashes = 1;
        let hasher = Arc::new(PasswordHasher::new(&config).unwrap());
        let tries: Vec<_> = (0..6)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(&pw("correct horse")).await })
            })
            .collect();
        let mut refused = 0;
        for task in tries {
            if matches!(task.await.unwrap(), Err(ApiError::RateLimited { .. })) {
                refused += 1;
            }
        }
        assert!(refused >= 1, "six hashes at once through one thread and a queue of one");
        assert_eq!(hasher.queue_depth(), 0);
    }

    #[test]
    fn the_policy_follows_nist_without_composition_rules() {
        let hasher = PasswordHasher::new(&settings(8)).unwrap();
        assert!(COMMON.len() >= 10_000);
        let ok = |text: &str| hasher.check_policy(&pw(text), "alice").is_ok();
        assert!(ok("plain lowercase words are fine"));
        assert!(ok("12345678a!"), "no composition rules either way");
        assert!(ok(&"long passphrase ".repeat(4)), "64 characters allowed");
        assert!(!ok("short"));
        assert!(!ok(&"x".repeat(65)));
        assert!(!ok("password1"), "on the common list");
        assert!(!ok("PassWord1"), "the list is matched case-insensitively");
        assert!(!ok("Alice"), "too short anyway");
        assert!(hasher.check_policy(&pw("alice-in-chains"), "alice-in-chains").is_err());
        assert!(ok("ünïcödé pässwörd"), "characters, not bytes");
    }
}
