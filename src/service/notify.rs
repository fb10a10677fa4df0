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

use std::sync::Arc;

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
        roles: &'a str,
    },
    /// By the operator on the server (`passgate user reset-devices`),
    /// who hands the enrolment code over in person: the mail has none.
    DevicesReset,
}

impl Change<'_> {
    fn subject(&self) -> &'static str {
        match self {
            Change::PasswordSet => "A password was set on your account",
            Change::PasswordChanged => "Your password was changed",
            Change::PasskeyBound { .. } => "A new passkey was added to your account",
            Change::PasskeyUnbound { .. } => "A passkey was removed from your account",
            Change::TotpAdded => "An authenticator app was set up on your account",
            Change::TotpRemoved => "The authenticator app was removed from your account",
            Change::RecoveryCodesMade => "New recovery codes were made for your account",
            Change::PasskeyRecovered { .. } => "A recovery code was used to add a passkey",
            Change::PasskeyRecoveryCodesMade => {
                "New passkey recovery codes were made for your account"
            }
            Change::RecoveryCancelled { .. } => "The account recovery was cancelled",
            Change::EmailChangeRequested { .. } => "A change of your email address was requested",
            Change::EmailChanged { .. } => "Your email address was changed",
            Change::Locked => "Your account was locked by an administrator",
            Change::Unlocked => "Your account was unlocked by an administrator",
            Change::RolesChanged { .. } => "The roles of your account were changed",
            Change::DevicesReset => "The passkeys of your account were reset",
        }
    }

    fn what(&self) -> String {
        match self {
            Change::PasswordSet => "A password was set for signing in without your passkey.".into(),
            Change::PasswordChanged => {
                "Your password was changed, and your other sessions were ended.".into()
            }
            Change::PasskeyBound { name, payments_from: None } => {
                format!("A new passkey, \"{name}\", was added to your account.")
            }
            Change::PasskeyBound { name, payments_from: Some(from) } => format!(
                "A new passkey, \"{name}\", was added to your account after a sign-in with a password. \
                 It can sign in now, but can approve payments only from {} (UTC).",
                rfc3339(*from)
            ),
            Change::PasskeyUnbound { name, by_admin: false } => {
                format!("The passkey \"{name}\" was removed from your account.")
            }
            Change::PasskeyUnbound { name, by_admin: true } => {
                format!("An administrator removed the passkey \"{name}\" from your account.")
            }
            Change::TotpAdded => {
                "An authenticator app (TOTP) was set up as a second factor.".into()
            }
            Change::TotpRemoved => {
                "The authenticator app (TOTP) and its recovery codes were removed.".into()
            }
            Change::RecoveryCodesMade => {
                "A new set of recovery codes was made; the old codes no longer work.".into()
            }
            Change::PasskeyRecovered { name, payments_from } => format!(
                "One of your passkey recovery codes was used to add a new passkey, \"{name}\", \
                 to your account. It can sign in now, but can approve payments only from {} \
                 (UTC). If this was not you, remove it and make new recovery codes at once.",
                rfc3339(*payments_from)
            ),
            Change::PasskeyRecoveryCodesMade => {
                "A new set of passkey recovery codes was made; the old ones no longer work. \
                 Each can add a new passkey when you have lost all of yours."
                    .into()
            }
            Change::RecoveryCancelled { by_passkey: false } => {
                "The account recovery requested by email was cancelled with the link from its \
                 mail; its code no longer works."
                    .into()
            }
            Change::RecoveryCancelled { by_passkey: true } => {
                "The account recovery requested by email was cancelled because one of your \
                 passkeys signed in after the request; its code no longer works."
                    .into()
            }
            Change::EmailChangeRequested { new_address } => format!(
                "Someone asked to change your account's email address to {new_address}. \
                 This address keeps working until the new one is confirmed."
            ),
            Change::EmailChanged { new_address } => format!(
                "Your account's email address was changed to {new_address}. \
                 Mail about your account now goes there."
            ),
            Change::Locked => {
                "An administrator locked your account and ended every session.".into()
            }
            Change::Unlocked => "An administrator unlocked your account.".into(),
            Change::RolesChanged { roles } => {
                format!("The roles of your account are now: {roles}.")
            }
            Change::DevicesReset => "The server's operator unbound every passkey of your account \
                and ended every session. They were given a one-time code, valid for 24 hours, \
                with which a new passkey can be bound."
                .into(),
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
        let body = format!(
            "Hello {name},\r\n\r\n{what}\r\n\r\nAccount: {username}\r\n{stamp}\r\n\r\n\
             If this was you, there is nothing to do.\r\n\r\n\
             If it was not you, someone may know your password or have your codes:\r\n\
             1. Sign in with your passkey at {origin}/ (a passkey cannot be phished).\r\n\
             2. Open \"Sign-in options\" ({origin}/security.html) and change your password; \
             remove and set up again your authenticator app.\r\n\
             3. Ask your administrator to reset your devices if a passkey you do not know \
             was added, or if you cannot sign in.\r\n",
            name = user.display_name,
            what = change.what(),
            username = user.username,
            stamp = self.when_and_where(),
            origin = self.origin,
        );
        Some(self.mail(address, change.subject(), body))
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

    /// "When: ... From: ...": the time, and the client of the request
    /// that made the change (its IP and browser).
    pub fn when_and_where(&self) -> String {
        let client = current_client();
        // The user agent is whatever the client sent, a phisher's too: it
        // is quoted as a claim, so it cannot pass for the notice's own words.
        let from = match (&client.ip, &client.user_agent) {
            (Some(ip), Some(agent)) => format!("{ip} (its browser calls itself \"{agent}\")"),
            (Some(ip), None) => ip.clone(),
            (None, Some(agent)) => format!("a browser that calls itself \"{agent}\""),
            (None, None) => "this server's own tools".to_owned(),
        };
        format!("When: {} (UTC)\r\nFrom: {from}", rfc3339(self.clock.now_ms()))
    }
}
