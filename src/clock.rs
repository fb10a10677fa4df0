//! Time as a dependency: services ask a `Clock`, so tests can move time
//! forward to expire ceremonies and tokens without sleeping.

// The trait lives in passgate-verifier so that one `ManualClock` drives
// both passgate and a verifier in the same test.
pub use passgate_verifier::clock::{Clock, ManualClock, Millis, SystemClock};

/// RFC 3339 UTC text for API responses.
pub fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}
