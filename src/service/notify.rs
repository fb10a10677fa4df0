//! Mail to an account's owner about every change to what guards it: a
//! password set or changed, a passkey bound or unbound, TOTP added or
//! removed, new recovery codes, an address change, an admin's lock or role
//! grant (an admin's device reset mails its own notice, with the code). Someone who phished a password and a code can make some
//! of these; the owner must hear of it at once, with what to do.
//!
//! Mail goes out in the background: a notice must never hold up or fail
//! the change it reports (a slow mail server would otherwise slow every
//! such request down to `smtp.timeout_seconds`). A notice that cannot be
//! sent is logged and counted.
//!
//! A notice is written in the account's language, else the language of
//! the request that made the change (`locale`); the text is made before
//! the send is spawned, while the request's client is still known.

use std::sync::Arc;

use super::locale::{Catalogue, Language, account_language, catalogue, render};
use crate::clock::{Clock, Millis, rfc3339};
use crate::config::Settings;
use crate::context::current_client;
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::store::UserRow;

/// What changed, as the owner reads it.
pub enum Change<'a> {
    PasswordSet,
    PasswordChanged,
    PasskeyBound {
        name: &'a str,
        payments_from: Option<Millis>,
    },
    PasskeyUnbound {
        name: &'a str,
        by_admin: bool,
    },
    /// A passkey bound with a passkey recovery code, instead of a sign-in.
    PasskeyRecovered {
        name: &'a str,
        payments_from: Millis,
        /// With the code of an account recovery by mail, not a passkey
        /// recovery code.
        by_mail: bool,
    },
    TotpAdded,
    TotpRemoved,
    RecoveryCodesMade,
    PasskeyRecoveryCodesMade,
    /// A pending account recovery by mail was cancelled.
    RecoveryCancelled {
        by_passkey: bool,
    },
    /// Mailed to the old address: the new one still has to be confirmed.
    EmailChangeRequested {
        new_address: &'a str,
    },
    /// Mailed to the old address once the new one is confirmed.
    EmailChanged {
        new_address: &'a str,
    },
    Locked,
    Unlocked,
    RolesChanged {
        /// Comma-separated; empty: none.
        roles: &'a str,
    },
    /// A browser marked trusted (issue 20 item 5): it lowers the risk of
    /// its sign-ins and payments until `until`.
    BrowserTrusted {
        label: &'a str,
        until: Millis,
    },
    /// By the operator on the server (`passgate user reset-devices`),
    /// who hands the enrolment code over in person: the mail has none.
    DevicesReset,
}

impl Change<'_> {
    /// The subject and the sentence that says what changed, in `words`.
    fn text(&self, words: &Catalogue) -> (&'static str, String) {
        match self {
            Change::PasswordSet => (words.subject_password_set, words.what_password_set.into()),
            Change::PasswordChanged => {
                (words.subject_password_changed, words.what_password_changed.into())
            }
            Change::PasskeyBound { name, payments_from: None } => {
                (words.subject_passkey_bound, render(words.what_passkey_bound, &[("name", name)]))
            }
            Change::PasskeyBound { name, payments_from: Some(from) } => (
                words.subject_passkey_bound,
                render(
                    words.what_passkey_bound_delayed,
                    &[("name", name), ("from", &rfc3339(*from))],
                ),
            ),
            Change::PasskeyUnbound { name, by_admin } => {
                let what = if *by_admin {
                    words.what_passkey_unbound_by_admin
                } else {
                    words.what_passkey_unbound
                };
                (words.subject_passkey_unbound, render(what, &[("name", name)]))
            }
            Change::TotpAdded => (words.subject_totp_added, words.what_totp_added.into()),
            Change::TotpRemoved => (words.subject_totp_removed, words.what_totp_removed.into()),
            Change::RecoveryCodesMade => {
                (words.subject_recovery_codes_made, words.what_recovery_codes_made.into())
            }
            Change::PasskeyRecovered { name, payments_from, by_mail } => (
                words.subject_passkey_recovered,
                render(
                    if *by_mail {
                        words.what_passkey_recovered_by_mail
                    } else {
                        words.what_passkey_recovered
                    },
                    &[("name", name), ("from", &rfc3339(*payments_from))],
                ),
            ),
            Change::PasskeyRecoveryCodesMade => (
                words.subject_passkey_recovery_codes_made,
                words.what_passkey_recovery_codes_made.into(),
            ),
            Change::RecoveryCancelled { by_passkey } => {
                let what = if *by_passkey {
                    words.what_recovery_cancelled_by_passkey
                } else {
                    words.what_recovery_cancelled_by_link
                };
                (words.subject_recovery_cancelled, what.into())
            }
            Change::EmailChangeRequested { new_address } => (
                words.subject_email_change_requested,
                render(words.what_email_change_requested, &[("address", new_address)]),
            ),
            Change::EmailChanged { new_address } => (
                words.subject_email_changed,
                render(words.what_email_changed, &[("address", new_address)]),
            ),
            Change::Locked => (words.subject_locked, words.what_locked.into()),
            Change::Unlocked => (words.subject_unlocked, words.what_unlocked.into()),
            Change::RolesChanged { roles } => {
                let roles = if roles.is_empty() { words.roles_none } else { roles };
                (words.subject_roles_changed, render(words.what_roles_changed, &[("roles", roles)]))
            }
            Change::BrowserTrusted { label, until } => (
                words.subject_browser_trusted,
                render(
                    words.what_browser_trusted,
                    &[("label", label), ("until", &rfc3339(*until))],
                ),
            ),
            Change::DevicesReset => (words.subject_devices_reset, words.what_devices_reset.into()),
        }
    }
}

/// Mails notices to accounts' owners.
#[derive(Clone)]
pub struct Notifier {
    mailer: Arc<Mailer>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// The first web origin: where the pages the notices point to live.
    origin: Arc<str>,
}

impl Notifier {
    pub fn new(
        settings: &Settings,
        mailer: Arc<Mailer>,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Notifier {
        let origin = settings
            .webauthn
            .origins
            .iter()
            .find(|o| matches!(o.scheme(), "https" | "http"))
            .map(|o| o.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Notifier { mailer, metrics, clock, origin: origin.into() }
    }

    /// Mails `change` to the account's verified address (or `to`, for the
    /// old address of an address change), in the background. Accounts
    /// without a verified address get no mail. The returned handle is for
    /// callers that end before the send would (the CLI).
    pub fn notify(
        &self,
        user: &UserRow,
        change: Change<'_>,
        to: Option<&str>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let address = match to {
            Some(address) => address.to_owned(),
            None => user.email.clone().filter(|_| user.email_verified)?,
        };
        let language = account_language(user);
        let words = catalogue(language);
        let (subject, what) = change.text(words);
        let body = render(
            words.notice_body,
            &[
                ("name", &user.display_name),
                ("what", &what),
                ("username", &user.username),
                ("stamp", &self.when_and_where(language)),
                ("origin", &self.origin),
            ],
        );
        Some(self.mail(address, subject, body))
    }

    /// Mails `body` in the background; a failure is logged and counted,
    /// never the body (it may hold a code).
    pub fn mail(
        &self,
        address: String,
        subject: &'static str,
        body: String,
    ) -> tokio::task::JoinHandle<()> {
        let mailer: Arc<Mailer> = self.mailer.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = mailer.send(&address, subject, body).await {
                metrics.mail_failed("notice");
                tracing::error!(error.cause_chain = ?error, subject, "a notice could not be mailed");
            }
        })
    }

    /// The web origin the mails' links point to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Counts a mail of `kind` (one of `metrics::MAIL_KINDS`) that its
    /// sender could not hand to the mail server.
    pub fn mail_failed(&self, kind: &'static str) {
        self.metrics.mail_failed(kind);
    }

    /// "When: ... From: ...", in `language`: the time, and the client of
    /// the request that made the change (its IP and browser).
    pub fn when_and_where(&self, language: Language) -> String {
        stamp(catalogue(language), self.clock.now_ms())
    }
}

/// The stamp at `now`, from the client of the request being served.
fn stamp(words: &Catalogue, now: Millis) -> String {
    let client = current_client();
    // The user agent is whatever the client sent, a phisher's too: it is
    // quoted as a claim, so it cannot pass for the notice's own words.
    let from = match (&client.ip, &client.user_agent) {
        (Some(ip), Some(agent)) => render(words.from_ip_and_agent, &[("ip", ip), ("agent", agent)]),
        (Some(ip), None) => ip.clone(),
        (None, Some(agent)) => render(words.from_agent, &[("agent", agent)]),
        (None, None) => words.from_server_tools.to_owned(),
    };
    render(words.stamp, &[("when", &rfc3339(now)), ("from", &from)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_change() -> Vec<Change<'static>> {
        vec![
            Change::PasswordSet,
            Change::PasswordChanged,
            Change::PasskeyBound { name: "Phone", payments_from: None },
            Change::PasskeyBound { name: "Phone", payments_from: Some(86_400_000) },
            Change::PasskeyUnbound { name: "Phone", by_admin: false },
            Change::PasskeyUnbound { name: "Phone", by_admin: true },
            Change::PasskeyRecovered { name: "Phone", payments_from: 86_400_000, by_mail: false },
            Change::PasskeyRecovered { name: "Phone", payments_from: 86_400_000, by_mail: true },
            Change::TotpAdded,
            Change::TotpRemoved,
            Change::RecoveryCodesMade,
            Change::PasskeyRecoveryCodesMade,
            Change::RecoveryCancelled { by_passkey: false },
            Change::RecoveryCancelled { by_passkey: true },
            Change::EmailChangeRequested { new_address: "new@example.test" },
            Change::EmailChanged { new_address: "new@example.test" },
            Change::Locked,
            Change::Unlocked,
            Change::RolesChanged { roles: "admin" },
            Change::RolesChanged { roles: "" },
            Change::BrowserTrusted { label: "Chrome on Linux", until: 86_400_000 },
            Change::DevicesReset,
        ]
    }

    #[test]
    fn every_notice_fills_every_placeholder_in_every_language() {
        for language in Language::ALL {
            let words = catalogue(language);
            for change in every_change() {
                let (subject, what) = change.text(words);
                assert!(!subject.contains('{') && !what.contains('{'), "{language}: {what}");
                assert!(!what.is_empty(), "{language}: {subject}");
            }
            let stamp = stamp(words, 86_400_000);
            assert!(stamp.contains("1970-01-02T00:00:00"), "{language}: {stamp}");
            assert!(!stamp.contains('{'), "{language}: {stamp}");
        }
    }

    #[test]
    fn the_dates_and_values_reach_the_chinese_text() {
        let words = catalogue(Language::ZhCn);
        let change = Change::PasskeyBound { name: "工作电脑", payments_from: Some(86_400_000) };
        let (subject, what) = change.text(words);
        assert_eq!(subject, "您的账户添加了新的通行密钥");
        assert!(what.contains("“工作电脑”") && what.contains("1970-01-02T00:00:00"), "{what}");
        let (_, none) = Change::RolesChanged { roles: "" }.text(words);
        assert!(none.contains("无"), "{none}");
        let (_, english) = Change::RolesChanged { roles: "" }.text(catalogue(Language::En));
        assert_eq!(english, "The roles of your account are now: none.");
    }
}
