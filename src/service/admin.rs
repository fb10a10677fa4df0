//! The admin console's operations (API contract, "Admin"): find users,
//! see their factors, devices, sessions and lock state, reset their
//! devices when a phone is lost, lock and unlock, grant and revoke roles,
//! and read the audit trail. Every action is audited with the acting admin.

use std::sync::Arc;

use serde::Serialize;

use super::account::Account;
use super::audit::{Audit, Event};
use super::codes::CodeHasher;
use super::devices::{Device, Devices, ENROLMENT_PURPOSE, Session};
use super::fresh::Freshness;
use super::locale::{account_language, catalogue, render};
use super::notify::{Change, Notifier};
use super::profile::Profile;
use super::tokens::{AccessClaims, Tokens};
use crate::clock::{Clock, Millis, rfc3339};
use crate::domain::{ADMIN, DeviceId, Roles, UserId, Username};
use crate::error::{ApiError, Result};
use crate::mailer::Mailer;
use crate::store::{Store, UserRow};

/// Roles the API may grant; anything else is refused.
const KNOWN_ROLES: &[&str] = &[ADMIN];
/// How long a reset's enrolment code lives: a day, to reach a user who
/// lost their phone.
const ENROLMENT_TTL_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserSummary {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub locked: bool,
    pub created_at: String,
}

impl From<&UserRow> for UserSummary {
    fn from(user: &UserRow) -> Self {
        UserSummary {
            user_id: user.user_id.to_string(),
            username: user.username.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            roles: user.roles.names().to_vec(),
            locked: user.locked_at.is_some(),
            created_at: rfc3339(user.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub users: Vec<UserSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub profile: Profile,
    pub locked: bool,
    pub locked_at: Option<String>,
    pub devices: Vec<Device>,
    pub sessions: Vec<Session>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResetOutcome {
    pub revoked_devices: u64,
    pub revoked_sessions: u64,
    /// Where the one-time enrolment code was mailed (the verified address).
    pub enrolment_code_sent_to: Option<String>,
    /// Only when the user has no verified address: the admin hands it over
    /// in person. Shown once; stored only as a keyed hash.
    pub enrolment_code: Option<String>,
}

/// The actor on record for what the operator does with the `passgate`
/// command on the server, where no account is signed in.
pub const CLI_ACTOR: &str = "cli";

/// What `create_user_by_operator` made.
#[derive(Debug)]
pub struct CreatedUser {
    pub user_id: String,
    pub username: String,
    pub roles: Vec<String>,
    /// Shown once to the operator; stored only as a keyed hash.
    pub enrolment_code: String,
    pub code_expires_at: Millis,
}

/// A caller that `Core::admin` found to hold the admin role. Every admin
/// operation takes one and only this module makes one, so a new handler
/// cannot reach an admin operation without the check.
pub struct AdminCaller(AccessClaims);

impl AdminCaller {
    pub fn claims(&self) -> &AccessClaims {
        &self.0
    }
}

/// The admin console's operations.
#[derive(Clone)]
pub struct Admin {
    pub(super) store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    codes: Arc<CodeHasher>,
    mailer: Arc<Mailer>,
    audit: Audit,
    notifier: Notifier,
    fresh: Freshness,
    tokens: Tokens,
    devices: Devices,
    account: Account,
}

impl Admin {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        codes: Arc<CodeHasher>,
        mailer: Arc<Mailer>,
        audit: Audit,
        notifier: Notifier,
        fresh: Freshness,
        tokens: Tokens,
        devices: Devices,
        account: Account,
    ) -> Admin {
        Admin { store, clock, codes, mailer, audit, notifier, fresh, tokens, devices, account }
    }

    /// The bearer as an admin; 403 unless they are one.
    pub async fn admin(&self, claims: AccessClaims) -> Result<AdminCaller> {
        self.require_admin(&claims).await?;
        Ok(AdminCaller(claims))
    }

    /// The bearer, if an admin; 403 otherwise. The role is read from the
    /// account too, so a revoked admin's token stops working at once rather
    /// than when it expires.
    async fn require_admin(&self, claims: &AccessClaims) -> Result<()> {
        let refused = || ApiError::Forbidden("this needs the admin role".into());
        if !claims.roles.iter().any(|r| r == ADMIN) {
            return Err(refused());
        }
        let user = self.store.find_user(&claims.sub).await?.ok_or_else(refused)?;
        if user.roles.is_admin() && user.locked_at.is_none() { Ok(()) } else { Err(refused()) }
    }

    /// An admin action (reset, unbind, lock, unlock, roles): besides the
    /// role (which `admin` checked against the account, in this request,
    /// to make the `AdminCaller`), the admin's own passkey sign-in within
    /// `mfa.fresh_auth_seconds`, so that a phished admin password and code
    /// cannot act (403 `passkey_required`).
    async fn require_admin_action(&self, admin: &AdminCaller) -> Result<()> {
        self.fresh.require_fresh_passkey(&admin.0).await
    }

    async fn target(&self, user_id: &str) -> Result<UserRow> {
        self.store
            .find_user(user_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("no such user".into()))
    }

    /// Actions on another admin need a reason on record.
    fn check_reason<'a>(
        &self,
        target: &UserRow,
        reason: Option<&'a str>,
    ) -> Result<Option<&'a str>> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_none() && target.roles.is_admin() {
            return Err(ApiError::ValidationFailed(
                "reason: required for an action on an admin".into(),
            ));
        }
        Ok(reason)
    }

    pub async fn search_users(
        &self,
        _admin: &AdminCaller,
        query: &str,
        limit: i64,
        cursor: Option<&str>,
    ) -> Result<UserPage> {
        let limit = limit.clamp(1, 100);
        let rows = self
            .store
            .search_users(&query.trim().to_lowercase(), cursor.unwrap_or(""), limit + 1)
            .await?;
        let more = rows.len() as i64 > limit;
        let users: Vec<UserSummary> =
            rows.iter().take(limit as usize).map(UserSummary::from).collect();
        let next_cursor = more.then(|| users.last().map(|u| u.username.clone())).flatten();
        Ok(UserPage { users, next_cursor })
    }

    pub async fn user_detail(&self, _admin: &AdminCaller, user_id: &str) -> Result<UserDetail> {
        let user = self.target(user_id).await?;
        let profile = self.account.profile(user_id).await?;
        let devices = self.devices.list(user_id).await?;
        let sessions = self.store.user_sessions(user_id, self.clock.now_ms()).await?;
        Ok(UserDetail {
            profile,
            locked: user.locked_at.is_some(),
            locked_at: user.locked_at.map(rfc3339),
            devices,
            sessions: sessions
                .iter()
                .filter(|s| self.tokens.is_live(s))
                .map(|s| Session::of(s, ""))
                .collect(),
        })
    }

    /// A lost or stolen phone: every passkey unbound, every session and
    /// refresh token ended, and a one-time enrolment code for a new device.
    pub async fn reset_devices(
        &self,
        admin: &AdminCaller,
        user_id: &str,
        reason: &str,
    ) -> Result<ResetOutcome> {
        self.require_admin_action(admin).await?;
        let user = self.target(user_id).await?;
        let (code, mut outcome) = self.unbind_all(&user, reason, &admin.0.sub).await?;
        let address = user.email.clone().filter(|_| user.email_verified);
        match address {
            Some(address) => {
                // The owner reads it, not the admin: in the account's language.
                let language = account_language(&user);
                let words = catalogue(language);
                let stamp = self.notifier.when_and_where(language);
                let values: [(&str, &str); 4] = [
                    ("name", &user.display_name),
                    ("username", &user.username),
                    ("code", &code),
                    ("stamp", &stamp),
                ];
                let body = render(words.enrolment_code_body, &values);
                if let Err(error) =
                    self.mailer.send(&address, words.subject_enrolment_code, body).await
                {
                    self.notifier.mail_failed("enrolment");
                    tracing::error!(error.cause_chain = ?error, "the enrolment code could not be mailed");
                    outcome.enrolment_code = Some(code);
                } else {
                    outcome.enrolment_code_sent_to = Some(address);
                }
            }
            None => outcome.enrolment_code = Some(code),
        }
        // Who holds the code is on record: the owner's mailbox, or the
        // admin who was shown it once.
        let how = if outcome.enrolment_code.is_some() {
            "enrolment code shown once to the admin to hand over (no verified address, or mail failed)"
        } else {
            "enrolment code mailed to the verified address"
        };
        self.audit
            .record(
                Event::ok("enrolment_code_issued").user(user_id).actor(&admin.0.sub).reason(how),
            )
            .await;
        Ok(outcome)
    }

    /// `reset_devices` for the operator on the server (`passgate user
    /// reset-devices`): the break-glass way back when no admin can sign in.
    /// The code is returned to be handed over, never mailed: whoever runs
    /// the command already holds the database, and a code in a mailbox
    /// that may be the very thing lost would be one more copy. The owner
    /// is told by a notice without it.
    pub async fn reset_devices_by_operator(
        &self,
        user_id: &str,
        reason: &str,
    ) -> Result<ResetOutcome> {
        let user = self.target(user_id).await?;
        let (code, mut outcome) = self.unbind_all(&user, reason, CLI_ACTOR).await?;
        outcome.enrolment_code = Some(code);
        let how = "enrolment code shown once on the server's command line to hand over";
        self.audit
            .record(Event::ok("enrolment_code_issued").user(user_id).actor(CLI_ACTOR).reason(how))
            .await;
        if let Some(sending) = self.notifier.notify(&user, Change::DevicesReset, None) {
            // The command ends right after this: let the notice go first.
            let _ = sending.await;
        }
        Ok(outcome)
    }

    /// Unbinds every passkey, ends every session and stores a new
    /// enrolment code, at once, audited; the code, for the caller to hand
    /// over.
    async fn unbind_all(
        &self,
        user: &UserRow,
        reason: &str,
        actor: &str,
    ) -> Result<(String, ResetOutcome)> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ApiError::ValidationFailed("reason: required".into()));
        }
        let user_id = user.user_id.to_string();
        let code = super::codes::recovery_code();
        let normalised = super::codes::normalise_recovery(&code);
        let hash = self.codes.hash(ENROLMENT_PURPOSE, &user_id, &normalised);
        let now = self.clock.now_ms();
        let (devices, sessions) =
            self.store.reset_devices(&user_id, &hash, now + ENROLMENT_TTL_MS, now).await?;
        self.audit
            .record(Event::ok("devices_reset").user(&user_id).actor(actor).reason(reason))
            .await;
        let outcome = ResetOutcome {
            revoked_devices: devices,
            revoked_sessions: sessions,
            enrolment_code_sent_to: None,
            enrolment_code: None,
        };
        Ok((code, outcome))
    }

    /// A new account with no passkey yet, for the operator on the server
    /// (`passgate user create`): the first admin of a fresh deployment,
    /// or an account made for someone. Returns the one-time enrolment code
    /// with which its owner binds a first passkey at /enrol.html, as after
    /// a device reset. Audited with the actor `cli`.
    pub async fn create_user_by_operator(
        &self,
        username: &Username,
        admin: bool,
    ) -> Result<CreatedUser> {
        let now = self.clock.now_ms();
        let roles = if admin { Roles::new(&[ADMIN]) } else { Roles::default() };
        let user = UserRow {
            user_id: UserId::new(),
            username: username.to_string(),
            display_name: username.to_string(),
            email: None,
            email_verified: false,
            roles,
            locked_at: None,
            created_at: now,
            language: None,
        };
        let user_id = user.user_id.to_string();
        let code = super::codes::recovery_code();
        let hash =
            self.codes.hash(ENROLMENT_PURPOSE, &user_id, &super::codes::normalise_recovery(&code));
        let expires_at = now + ENROLMENT_TTL_MS;
        self.store.create_user_for_enrolment(&user, &hash, expires_at).await?;
        let roles = user.roles.names().to_vec();
        let created =
            format!("created on the server's command line, roles: [{}]", roles.join(", "));
        self.audit
            .record(Event::ok("user_registered").user(&user_id).actor(CLI_ACTOR).reason(&created))
            .await;
        let how = "enrolment code shown once on the server's command line to hand over";
        self.audit
            .record(Event::ok("enrolment_code_issued").user(&user_id).actor(CLI_ACTOR).reason(how))
            .await;
        Ok(CreatedUser {
            user_id,
            username: user.username,
            roles,
            enrolment_code: code,
            code_expires_at: expires_at,
        })
    }

    pub async fn admin_unbind_device(
        &self,
        admin: &AdminCaller,
        user_id: &str,
        device_id: &DeviceId,
        reason: Option<&str>,
    ) -> Result<()> {
        self.require_admin_action(admin).await?;
        let user = self.target(user_id).await?;
        let reason = self.check_reason(&user, reason)?;
        self.devices.unbind_device(user_id, device_id, Some(&admin.0.sub)).await?;
        if let Some(reason) = reason {
            let device = device_id.to_string();
            let event = Event::ok("admin_note").user(user_id).actor(&admin.0.sub).device(&device);
            self.audit.record(event.reason(reason)).await;
        }
        Ok(())
    }

    /// Locks (ending every session) or unlocks an account.
    pub async fn set_locked(
        &self,
        admin: &AdminCaller,
        user_id: &str,
        lock: bool,
        reason: Option<&str>,
    ) -> Result<UserSummary> {
        self.require_admin_action(admin).await?;
        let user = self.target(user_id).await?;
        let reason = self.check_reason(&user, reason)?;
        if lock && user_id == admin.0.sub {
            return Err(ApiError::Forbidden("an admin cannot lock their own account".into()));
        }
        let now = self.clock.now_ms();
        self.store.set_locked(user_id, lock.then_some(now), now).await?;
        let mut event = Event::ok(if lock { "account_disabled" } else { "account_enabled" })
            .user(user_id)
            .actor(&admin.0.sub);
        event.reason = reason;
        self.audit.record(event).await;
        self.notifier.notify(&user, if lock { Change::Locked } else { Change::Unlocked }, None);
        Ok(UserSummary::from(&self.target(user_id).await?))
    }

    /// Sets the account's roles (each must be known); a change to an
    /// admin's roles needs a reason.
    pub async fn set_roles(
        &self,
        admin: Option<&AdminCaller>,
        user_id: &str,
        roles: &[String],
        reason: Option<&str>,
    ) -> Result<UserSummary> {
        // None: the operator's CLI on the server itself.
        if let Some(admin) = admin {
            self.require_admin_action(admin).await?;
        }
        let user = self.target(user_id).await?;
        let reason = self.check_reason(&user, reason)?;
        if let Some(unknown) = roles.iter().find(|r| !KNOWN_ROLES.contains(&r.as_str())) {
            return Err(ApiError::ValidationFailed(format!("roles: unknown role {unknown:?}")));
        }
        if let Some(admin) = admin
            && admin.0.sub == user_id
            && !roles.iter().any(|r| r == ADMIN)
        {
            return Err(ApiError::Forbidden("an admin cannot revoke their own admin role".into()));
        }
        let roles = Roles::new(roles);
        self.store.set_roles(user_id, &roles.to_stored()).await?;
        let change = format!("roles: [{}]", roles.names().join(", "));
        let mut event = Event::ok("roles_changed").user(user_id).reason(&change);
        event.actor_id = admin.map(|a| a.0.sub.as_str());
        self.audit.record(event).await;
        if let Some(reason) = reason {
            let mut note = Event::ok("admin_note").user(user_id).reason(reason);
            note.actor_id = admin.map(|a| a.0.sub.as_str());
            self.audit.record(note).await;
        }
        if user.roles != roles {
            let listed = roles.names().join(", ");
            if let Some(sending) =
                self.notifier.notify(&user, Change::RolesChanged { roles: &listed }, None)
                && admin.is_none()
            {
                // The CLI ends right after this: let the notice go first.
                let _ = sending.await;
            }
        }
        Ok(UserSummary::from(&self.target(user_id).await?))
    }
}
