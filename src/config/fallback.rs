//! `[password]`, `[mfa]` and `[limits]`: what fallback sign-in (a password
//! and a second factor) takes, and how hard it may be tried.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassword {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    max_concurrent_hashes: usize,
    max_queued_hashes: usize,
    min_length: usize,
    max_length: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMfa {
    token_ttl_seconds: u64,
    totp_issuer: String,
    email_code_ttl_seconds: u64,
    email_code_max_tries: u32,
    email_resend_seconds: u64,
    fresh_auth_seconds: u64,
    mail_recovery_delay_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    ip_requests_per_minute: u64,
    account_requests_per_minute: u64,
    lockout_threshold: u64,
    lockout_base_seconds: u64,
    lockout_max_seconds: u64,
    failure_window_seconds: u64,
    lockout_permanent_threshold: u64,
}

/// argon2id cost and the hashing pool's bounds, and the password policy.
#[derive(Clone, Debug)]
pub struct PasswordSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Threads that hash at once (each holds `memory_kib`).
    pub max_concurrent_hashes: usize,
    /// Checks waiting for a thread; more are refused with 429.
    pub max_queued_hashes: usize,
    pub min_length: usize,
    pub max_length: usize,
}

#[derive(Clone, Debug)]
pub struct MfaSettings {
    pub token_ttl: Duration,
    pub totp_issuer: String,
    pub email_code_ttl: Duration,
    pub email_code_max_tries: u32,
    pub email_resend: Duration,
    /// How recent a sign-in must be for sensitive changes without the
    /// current password.
    pub fresh_auth: Duration,
    /// How long after an account recovery is requested by mail its code
    /// starts working: the owner, told at once, may cancel meanwhile.
    pub mail_recovery_delay: Duration,
}

/// Throttling of the password, code and MFA endpoints.
#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub ip_requests_per_minute: u64,
    pub account_requests_per_minute: u64,
    pub lockout_threshold: u64,
    pub lockout_base: Duration,
    pub lockout_max: Duration,
    /// Ages the lock's length: a failure after this long a quiet spell
    /// locks for `lockout_base` again. The count itself is never forgotten.
    pub failure_window: Duration,
    /// Consecutive failures after which fallback sign-in stays locked until
    /// a passkey sign-in or an admin unlock.
    pub lockout_permanent_threshold: u64,
}

pub(super) fn validate_password(raw: RawPassword) -> anyhow::Result<PasswordSettings> {
    // argon2's own bounds, and RFC 9106's minimum of 8 KiB per lane.
    if raw.parallelism == 0 || raw.parallelism > 16 {
        bail!("password.parallelism: {} is outside 1..=16", raw.parallelism);
    }
    if raw.memory_kib < 8 * raw.parallelism || raw.memory_kib > 4 * 1024 * 1024 {
        bail!(
            "password.memory_kib: {} is outside {}..=4194304",
            raw.memory_kib,
            8 * raw.parallelism
        );
    }
    if raw.iterations == 0 || raw.iterations > 100 {
        bail!("password.iterations: {} is outside 1..=100", raw.iterations);
    }
    if raw.max_queued_hashes == 0 {
        bail!("password.max_queued_hashes: must be at least 1");
    }
    if raw.min_length < 8 {
        bail!("password.min_length: {} is below 8 (NIST SP 800-63B)", raw.min_length);
    }
    if raw.max_length < 64 || raw.max_length > 1024 {
        bail!("password.max_length: {} is outside 64..=1024", raw.max_length);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // One core stays free for everything else, so a flood of password
    // checks cannot starve passkey sign-ins.
    let max_concurrent_hashes = if raw.max_concurrent_hashes == 0 {
        cores.saturating_sub(1).max(1)
    } else {
        raw.max_concurrent_hashes
    };
    Ok(PasswordSettings {
        memory_kib: raw.memory_kib,
        iterations: raw.iterations,
        parallelism: raw.parallelism,
        max_concurrent_hashes,
        max_queued_hashes: raw.max_queued_hashes,
        min_length: raw.min_length,
        max_length: raw.max_length,
    })
}

pub(super) fn validate_mfa(raw: RawMfa) -> anyhow::Result<MfaSettings> {
    let seconds = |key: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
        if range.contains(&value) {
            Ok(Duration::from_secs(value))
        } else {
            Err(anyhow::anyhow!(
                "mfa.{key}: {value} is outside {}..={}",
                range.start(),
                range.end()
            ))
        }
    };
    if raw.totp_issuer.trim().is_empty() || raw.totp_issuer.contains(':') {
        bail!("mfa.totp_issuer: must be a non-empty name without ':'");
    }
    if !(1..=20).contains(&raw.email_code_max_tries) {
        bail!("mfa.email_code_max_tries: {} is outside 1..=20", raw.email_code_max_tries);
    }
    Ok(MfaSettings {
        token_ttl: seconds("token_ttl_seconds", raw.token_ttl_seconds, 30..=1800)?,
        totp_issuer: raw.totp_issuer.trim().to_owned(),
        email_code_ttl: seconds("email_code_ttl_seconds", raw.email_code_ttl_seconds, 60..=3600)?,
        email_code_max_tries: raw.email_code_max_tries,
        email_resend: seconds("email_resend_seconds", raw.email_resend_seconds, 0..=3600)?,
        fresh_auth: seconds("fresh_auth_seconds", raw.fresh_auth_seconds, 30..=3600)?,
        mail_recovery_delay: seconds(
            "mail_recovery_delay_seconds",
            raw.mail_recovery_delay_seconds,
            3600..=30 * 86_400,
        )?,
    })
}

pub(super) fn validate_limits(raw: RawLimits) -> anyhow::Result<LimitSettings> {
    for (key, value) in [
        ("ip_requests_per_minute", raw.ip_requests_per_minute),
        ("account_requests_per_minute", raw.account_requests_per_minute),
        ("lockout_threshold", raw.lockout_threshold),
        ("lockout_base_seconds", raw.lockout_base_seconds),
        ("failure_window_seconds", raw.failure_window_seconds),
    ] {
        if value == 0 {
            bail!("limits.{key}: must be at least 1");
        }
    }
    if raw.lockout_max_seconds < raw.lockout_base_seconds {
        bail!("limits.lockout_max_seconds: must be at least limits.lockout_base_seconds");
    }
    // NIST SP 800-63B 5.2.2: at most 100 consecutive failures.
    if !(raw.lockout_threshold..=100).contains(&raw.lockout_permanent_threshold) {
        bail!(
            "limits.lockout_permanent_threshold: {} is outside limits.lockout_threshold..=100",
            raw.lockout_permanent_threshold
        );
    }
    Ok(LimitSettings {
        ip_requests_per_minute: raw.ip_requests_per_minute,
        account_requests_per_minute: raw.account_requests_per_minute,
        lockout_threshold: raw.lockout_threshold,
        lockout_base: Duration::from_secs(raw.lockout_base_seconds),
        lockout_max: Duration::from_secs(raw.lockout_max_seconds),
        failure_window: Duration::from_secs(raw.failure_window_seconds),
        lockout_permanent_threshold: raw.lockout_permanent_threshold,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{env, load_error};
    use crate::config::{Settings, SmtpTls};

    #[test]
    fn fallback_settings_are_read_and_checked_by_name() {
        let settings = Settings::load_from(
            None,
            env(&[
                ("PASSGATE__SMTP__HOST", "mail.example"),
                ("PASSGATE__SMTP__PORT", "465"),
                ("PASSGATE__SMTP__TLS", "TLS"),
                ("PASSGATE__SMTP__USERNAME", "passgate"),
                ("PASSGATE__SMTP__PASSWORD", "smtp-secret"),
                ("PASSGATE__SMTP__FROM", "Wallet <auth@wallet.example>"),
                ("PASSGATE__PASSWORD__MAX_CONCURRENT_HASHES", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.smtp.host.as_deref(), Some("mail.example"));
        assert_eq!((settings.smtp.port, settings.smtp.tls), (465, SmtpTls::Tls));
        assert_eq!(settings.password.max_concurrent_hashes, 3);
        assert!(!format!("{:?}", settings.smtp).contains("smtp-secret"));
        for (key, value, named) in [
            ("PASSGATE__SMTP__TLS", "ssl", "smtp.tls"),
            ("PASSGATE__SMTP__FROM", "not an address", "smtp.from"),
            ("PASSGATE__PASSWORD__MEMORY_KIB", "4", "password.memory_kib"),
            ("PASSGATE__PASSWORD__MIN_LENGTH", "6", "password.min_length"),
            ("PASSGATE__PASSWORD__MAX_LENGTH", "32", "password.max_length"),
            ("PASSGATE__MFA__EMAIL_CODE_MAX_TRIES", "0", "mfa.email_code_max_tries"),
            ("PASSGATE__MFA__TOKEN_TTL_SECONDS", "5", "mfa.token_ttl_seconds"),
            ("PASSGATE__LIMITS__LOCKOUT_THRESHOLD", "0", "limits.lockout_threshold"),
            ("PASSGATE__LIMITS__LOCKOUT_MAX_SECONDS", "1", "limits.lockout_max_seconds"),
        ] {
            assert!(load_error(&[(key, value)]).contains(named), "{key}={value}");
        }
        let plain_auth = load_error(&[
            ("PASSGATE__SMTP__HOST", "mail.example"),
            ("PASSGATE__SMTP__TLS", "none"),
            ("PASSGATE__SMTP__USERNAME", "passgate"),
        ]);
        assert!(plain_auth.contains("smtp.username"), "{plain_auth}");
    }
}
