//! The signals a rule may name, and how each is worked out from what
//! passgate already knows: the attempt itself, and a profile of the user
//! read in one query (`store::RiskStore::risk_profile`).

use crate::clock::Millis;
use crate::store::ProfileFact;

/// Every signal, by the name rules use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Kind,
    Factor,
    UserVerified,
    NewCredential,
    NewUserAgent,
    NewNetwork,
    AccountFailures15m,
    NetworkFailures15m,
    SyncedPasskey,
    HoursSinceLastSignIn,
    CloneWarning,
    AccountAgeDays,
    RecentReset,
    RecentPasskey,
    AmountRatio,
    FirstPayment,
    TrustedDevice,
}

/// What values a signal takes, which decides the comparisons a rule may
/// make with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Bool,
    Number,
    /// One of these words.
    Word(&'static [&'static str]),
}

pub const KINDS: &[&str] = &["signin", "payment"];
pub const FACTORS: &[&str] = &["passkey", "password_totp", "password_mail", "recovery_code"];

impl Signal {
    pub const ALL: [Signal; 17] = [
        Signal::Kind,
        Signal::Factor,
        Signal::UserVerified,
        Signal::NewCredential,
        Signal::NewUserAgent,
        Signal::NewNetwork,
        Signal::AccountFailures15m,
        Signal::NetworkFailures15m,
        Signal::SyncedPasskey,
        Signal::HoursSinceLastSignIn,
        Signal::CloneWarning,
        Signal::AccountAgeDays,
        Signal::RecentReset,
        Signal::RecentPasskey,
        Signal::AmountRatio,
        Signal::FirstPayment,
        Signal::TrustedDevice,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::Kind => "kind",
            Signal::Factor => "factor",
            Signal::UserVerified => "user_verified",
            Signal::NewCredential => "new_credential",
            Signal::NewUserAgent => "new_user_agent",
            Signal::NewNetwork => "new_network",
            Signal::AccountFailures15m => "account_failures_15m",
            Signal::NetworkFailures15m => "network_failures_15m",
            Signal::SyncedPasskey => "synced_passkey",
            Signal::HoursSinceLastSignIn => "hours_since_last_sign_in",
            Signal::CloneWarning => "clone_warning",
            Signal::AccountAgeDays => "account_age_days",
            Signal::RecentReset => "recent_reset",
            Signal::RecentPasskey => "recent_passkey",
            Signal::AmountRatio => "amount_ratio",
            Signal::FirstPayment => "first_payment",
            Signal::TrustedDevice => "trusted_device",
        }
    }

    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn shape(self) -> Shape {
        match self {
            Signal::Kind => Shape::Word(KINDS),
            Signal::Factor => Shape::Word(FACTORS),
            Signal::AccountFailures15m
            | Signal::NetworkFailures15m
            | Signal::HoursSinceLastSignIn
            | Signal::AccountAgeDays
            | Signal::AmountRatio => Shape::Number,
            _ => Shape::Bool,
        }
    }

    /// Whether the signal needs the user's profile (one query); the others
    /// come with the attempt.
    pub fn needs_profile(self) -> bool {
        !matches!(
            self,
            Signal::Kind
                | Signal::Factor
                | Signal::UserVerified
                | Signal::SyncedPasskey
                | Signal::TrustedDevice
        )
    }
}

/// A signal's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Word(&'static str),
}

/// The signals of one attempt.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    values: Vec<(Signal, Value)>,
}

impl Signals {
    pub fn set(&mut self, signal: Signal, value: Value) {
        match self.values.iter_mut().find(|(s, _)| *s == signal) {
            Some(slot) => slot.1 = value,
            None => self.values.push((signal, value)),
        }
    }

    /// The value, or the one that says nothing unusual (false, 0) when it
    /// was not worked out: a rule never fires on a missing fact.
    pub fn get(&self, signal: Signal) -> Value {
        self.values.iter().find(|(s, _)| *s == signal).map(|(_, v)| *v).unwrap_or(
            match signal.shape() {
                Shape::Bool => Value::Bool(false),
                Shape::Number => Value::Number(0.0),
                Shape::Word(words) => Value::Word(words[0]),
            },
        )
    }
}

/// The network a client address belongs to, as the failure counts and
/// the history key it: one function for both, so that they always agree.
pub use crate::service::anomalies::network_of;

/// A browser and system family from a User-Agent header, e.g.
/// "firefox/linux": coarse on purpose, so that a browser's update is not
/// a new browser. Unknown parts are "other"; no header is "unknown".
pub fn user_agent_family(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.map(str::trim).filter(|ua| !ua.is_empty()) else {
        return "unknown".to_owned();
    };
    let has = |needle: &str| ua.contains(needle);
    // Order matters: Edge and Opera also say Chrome, Chrome says Safari,
    // and Android says Linux.
    let browser = if has("Edg/") || has("EdgA/") || has("EdgiOS/") {
        "edge"
    } else if has("OPR/") || has("Opera") {
        "opera"
    } else if has("SamsungBrowser/") {
        "samsung"
    } else if has("Firefox/") || has("FxiOS/") {
        "firefox"
    } else if has("Chrome/") || has("CriOS/") || has("Chromium/") {
        "chrome"
    } else if has("Safari/") {
        "safari"
    } else {
        "other"
    };
    let system = if has("Android") {
        "android"
    } else if has("iPhone") || has("iPad") || has("iPod") {
        "ios"
    } else if has("Windows") {
        "windows"
    } else if has("CrOS") {
        "chromeos"
    } else if has("Mac OS X") || has("Macintosh") {
        "macos"
    } else if has("Linux") {
        "linux"
    } else {
        "other"
    };
    format!("{browser}/{system}")
}

/// An amount as a whole number of thousandths ("12.5" is 12500): amounts
/// have at most 3 decimals and 15 digits before the point, so it fits.
pub fn thousandths(amount: &str) -> Option<i64> {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    if fraction.len() > 3 {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<3}").parse().ok()?;
    whole.checked_mul(1000)?.checked_add(fraction)
}

/// How far back the clone-warning signal looks.
pub const CLONE_WINDOW_MS: Millis = 30 * 86_400_000;
/// How far back the recent-reset and recent-passkey signals look.
pub const RECENT_WINDOW_MS: Millis = 7 * 86_400_000;
/// The failure-velocity signals' window, in minutes.
pub const FAILURE_WINDOW_MINUTES: i64 = 15;
/// `hours_since_last_sign_in` of an account never signed in to.
pub const NEVER: f64 = 1_000_000.0;

/// What the profile query found, read as signals.
pub struct Profile<'a> {
    pub facts: &'a [ProfileFact],
    pub now: Millis,
    pub network: &'a str,
    pub user_agent: &'a str,
    pub credential: Option<&'a str>,
    /// The payment's amount in thousandths, if this is a payment.
    pub amount: Option<i64>,
}

impl Profile<'_> {
    fn fact(&self, dimension: &str, value: &str) -> Option<&ProfileFact> {
        self.facts.iter().find(|f| f.dimension == dimension && f.value == value)
    }

    fn number(&self, dimension: &str) -> i64 {
        self.fact(dimension, "").map_or(0, |f| f.amount)
    }

    fn recent(&self, at: Option<Millis>, window: Millis) -> bool {
        at.is_some_and(|at| at > self.now - window)
    }

    /// Sets every profile signal from the facts.
    pub fn fill(&self, signals: &mut Signals) {
        let last_sign_in = self.fact("signin", "").and_then(|f| f.at);
        // An account with no history yet (made before the risk decision
        // came, or by an admin) has nothing to compare with: its first
        // sign-in is not "new", it sets what is known.
        let known = last_sign_in.is_some();
        let is_new = |dimension: &str, value: &str| {
            known && !value.is_empty() && self.fact(dimension, value).is_none()
        };
        signals.set(Signal::NewNetwork, Value::Bool(is_new("network", self.network)));
        signals.set(Signal::NewUserAgent, Value::Bool(is_new("user_agent", self.user_agent)));
        let credential = self.credential.unwrap_or("");
        signals.set(Signal::NewCredential, Value::Bool(is_new("credential", credential)));
        let hours = last_sign_in.map_or(NEVER, |at| ((self.now - at).max(0) / 3_600_000) as f64);
        signals.set(Signal::HoursSinceLastSignIn, Value::Number(hours));
        let event = |name: &str| self.fact("event", name).and_then(|f| f.at);
        let clone = self.recent(event("clone_warning"), CLONE_WINDOW_MS);
        signals.set(Signal::CloneWarning, Value::Bool(clone));
        let reset = self.recent(event("devices_reset"), RECENT_WINDOW_MS);
        signals.set(Signal::RecentReset, Value::Bool(reset));
        let newest_passkey = self.fact("passkeys", "").and_then(|f| f.at);
        let waiting = self.fact("waiting", "").and_then(|f| f.at).is_some_and(|t| t > self.now);
        let recent_passkey = waiting || self.recent(newest_passkey, RECENT_WINDOW_MS);
        signals.set(Signal::RecentPasskey, Value::Bool(recent_passkey));
        if let Some(created) = self.fact("user", "").and_then(|f| f.at) {
            let days = ((self.now - created).max(0) / 86_400_000) as f64;
            signals.set(Signal::AccountAgeDays, Value::Number(days));
        }
        signals
            .set(Signal::AccountFailures15m, Value::Number(self.number("account_failures") as f64));
        signals
            .set(Signal::NetworkFailures15m, Value::Number(self.number("network_failures") as f64));
        if let Some(amount) = self.amount {
            let largest = self.facts.iter().find(|f| f.dimension == "payment").map(|f| f.amount);
            signals.set(Signal::FirstPayment, Value::Bool(largest.is_none()));
            let ratio = match largest {
                Some(largest) if largest > 0 => amount as f64 / largest as f64,
                _ => 0.0,
            };
            signals.set(Signal::AmountRatio, Value::Number(ratio));
        }
    }

    /// How many passkeys the account has.
    pub fn passkeys(&self) -> i64 {
        self.number("passkeys")
    }

    /// Whether this attempt shows anything the history does not hold yet,
    /// or the last sign-in was long enough ago to be worth updating:
    /// otherwise the history is not written (most sign-ins write nothing).
    pub fn worth_recording(&self, dimensions: &[(&str, &str)]) -> bool {
        let stale =
            self.fact("signin", "").and_then(|f| f.at).is_none_or(|at| self.now - at >= 3_600_000);
        stale
            || dimensions.iter().any(|(dimension, value)| {
                !value.is_empty() && self.fact(dimension, value).is_none()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_48() {
        assert_eq!(network_of("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(network_of("2001:db8:1:2::5").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(network_of("::ffff:198.51.100.9").as_deref(), Some("198.51.100.0/24"));
        assert_eq!(network_of("not an address"), None);
    }

    #[test]
    fn user_agent_families_are_coarse() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        let chrome_android = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
        let safari_ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
        assert_eq!(user_agent_family(Some(firefox)), "firefox/linux");
        assert_eq!(user_agent_family(Some(chrome_android)), "chrome/android");
        assert_eq!(user_agent_family(Some(safari_ios)), "safari/ios");
        assert_eq!(user_agent_family(Some(edge)), "edge/windows");
        assert_eq!(user_agent_family(Some("curl/8.5.0")), "other/other");
        assert_eq!(user_agent_family(None), "unknown");
        // A new version of the same browser is the same family.
        let newer = firefox.replace("133.0", "134.0");
        assert_eq!(user_agent_family(Some(&newer)), user_agent_family(Some(firefox)));
    }

    #[test]
    fn amounts_are_read_in_thousandths() {
        assert_eq!(thousandths("12.5"), Some(12_500));
        assert_eq!(thousandths("0.001"), Some(1));
        assert_eq!(thousandths("100"), Some(100_000));
        assert_eq!(thousandths("999999999999999.999"), Some(999_999_999_999_999_999));
        assert_eq!(thousandths("1.2345"), None);
    }

    fn fact(dimension: &str, value: &str, amount: i64, at: Option<Millis>) -> ProfileFact {
        ProfileFact { dimension: dimension.into(), value: value.into(), amount, at }
    }

    #[test]
    fn nothing_is_new_to_an_account_without_history_and_unknowns_are_new_after() {
        let now = 1_000 * 86_400_000;
        let empty = Profile {
            facts: &[],
            now,
            network: "203.0.113.0/24",
            user_agent: "firefox/linux",
            credential: None,
            amount: None,
        };
        let mut signals = Signals::default();
        empty.fill(&mut signals);
        assert_eq!(signals.get(Signal::NewNetwork), Value::Bool(false));
        assert_eq!(signals.get(Signal::HoursSinceLastSignIn), Value::Number(NEVER));
        let facts = [
            fact("signin", "", 0, Some(now - 5 * 3_600_000)),
            fact("network", "203.0.113.0/24", 0, Some(now)),
            fact("event", "clone_warning", 0, Some(now - 86_400_000)),
        ];
        let known = Profile { facts: &facts, user_agent: "chrome/android", ..empty };
        let mut signals = Signals::default();
        known.fill(&mut signals);
        assert_eq!(signals.get(Signal::NewNetwork), Value::Bool(false));
        assert_eq!(signals.get(Signal::NewUserAgent), Value::Bool(true));
        assert_eq!(signals.get(Signal::HoursSinceLastSignIn), Value::Number(5.0));
        assert_eq!(signals.get(Signal::CloneWarning), Value::Bool(true));
        assert_eq!(signals.get(Signal::RecentReset), Value::Bool(false));
    }

    #[test]
    fn a_payment_is_weighed_against_the_largest_in_its_currency() {
        let facts = [fact("payment", "EUR", 20_000, Some(0))];
        let profile = Profile {
            facts: &facts,
            now: 0,
            network: "",
            user_agent: "",
            credential: None,
            amount: Some(400_000),
        };
        let mut signals = Signals::default();
        profile.fill(&mut signals);
        assert_eq!(signals.get(Signal::AmountRatio), Value::Number(20.0));
        assert_eq!(signals.get(Signal::FirstPayment), Value::Bool(false));
        let first = Profile { facts: &[], ..profile };
        let mut signals = Signals::default();
        first.fill(&mut signals);
        assert_eq!(signals.get(Signal::FirstPayment), Value::Bool(true));
        assert_eq!(signals.get(Signal::AmountRatio), Value::Number(0.0));
    }
}
