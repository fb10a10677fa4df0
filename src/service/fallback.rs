//! Fallback sign-in (API contract, "Fallback"): a password, then a second
//! factor (TOTP, a recovery code, or a code mailed to the verified
//! address). The password step hands out a short-lived mfa_token that is
//! good only for the second step and is used up by it.

use std::sync::Arc;

use serde::Serialize;

use super::audit::{Audit, Event};
use super::codes::CodeHasher;
use super::locale::{catalogue, render, requester_language};
use super::password::{Checked, PasswordHasher};
use super::risk::{Attempt as RiskAttempt, Factor, Risk};
use super::throttle::{Attempt, Throttle, subject};
use super::tokens::{SessionGrant, TokenSet, Tokens};
use super::totp::Totp;
use crate::clock::{Clock, Millis};
use crate::config::Settings;
use crate::context::ClientInfo;
use crate::domain::{OneTimeCode, OpaqueToken, Password, Username};
use crate::error::{ApiError, Result};
use crate::mailer::Mailer;
use crate::metrics::{FallbackMethod, Metrics};
use crate::store::{EmailCodeRow, Store, UserRow};

/// RFC 8176: a password and a one-time code, two factors.
const FALLBACK_AMR: &[&str] = &["pwd", "otp", "mfa"];
pub(super) const LOGIN_CODE: &str = "login";
const GROUP: &str = "login";

/// What a mailed code is for, which picks its mail's words.
#[derive(Clone, Copy)]
pub(super) enum CodeMail {
    SignIn,
    VerifyEmail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MfaChallenge {
    /// Good only for /v1/login/mfa/*, once, for `expires_in` seconds.
    pub mfa_token: String,
    /// Second factors this account can use: `totp` (also takes a recovery
    /// code), `email_otp`.
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CodeSent {
    /// Seconds the mailed code stays good.
    pub expires_in: u64,
}

/// Password sign-in and its second step.
#[derive(Clone)]
pub struct Fallback {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    passwords: Arc<PasswordHasher>,
    codes: Arc<CodeHasher>,
    mailer: Arc<Mailer>,
    audit: Audit,
    throttle: Throttle,
    tokens: Tokens,
    totp: Totp,
    risk: Risk,
}

impl Fallback {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        passwords: Arc<PasswordHasher>,
        codes: Arc<CodeHasher>,
        mailer: Arc<Mailer>,
        audit: Audit,
        throttle: Throttle,
        tokens: Tokens,
        totp: Totp,
        risk: Risk,
    ) -> Fallback {
        Fallback {
            settings,
            store,
            clock,
            metrics,
            passwords,
            codes,
            mailer,
            audit,
            throttle,
            tokens,
            totp,
            risk,
        }
    }

    /// A password check through the hashing pool, counted in the metrics
    /// when the pool's queue is full.
    pub(super) async fn check_password(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Checked> {
        let checked = self.passwords.check(password, stored).await;
        if matches!(checked, Err(ApiError::RateLimited { .. })) {
            self.metrics.rate_limited("hash_queue");
        }
        checked
    }

    pub async fn login_password(
        &self,
        username: &Username,
        password: &Password,
        client: &ClientInfo,
    ) -> Result<MfaChallenge> {
        self.throttle.check(GROUP, client, Some(username.as_ref())).await?;
        let user = self.store.find_user_by_username(username.as_ref()).await?;
        let user_text = user.as_ref().map(|u| u.user_id.to_string());
        let user_id = user_text.as_deref();
        let subject = subject(user_id, username.as_ref());
        let attempt = self.throttle.begin_attempt(&subject).await?;
        let stored = match user_id {
            Some(id) => self.store.password_hash(id).await?,
            None => None,
        };
        // An unknown name, an account without a password and a wrong
        // password all cost one argon2 check and get the same answer.
        let checked = match self.check_password(password, stored.as_deref()).await {
            Ok(checked) => checked,
            Err(error) => {
                // Not checked (the hashing queue is full): not an attempt.
                self.throttle.attempt_returned(attempt).await?;
                return Err(error);
            }
        };
        let (Some(user), Some(user_id), Some(stored)) = (user, user_id, stored) else {
            return self.password_refused(attempt, None).await;
        };
        if checked == Checked::Wrong {
            return self.password_refused(attempt, Some(user_id)).await;
        }
        // A right password alone neither counts nor clears: the count
        // ends only with a whole sign-in.
        self.throttle.attempt_returned(attempt).await?;
        if let Checked::RightRehashed(fresh) = &checked
            && self.store.upgrade_password(user_id, &stored, fresh).await?
        {
            self.audit.record(Event::ok("password_rehashed").user(user_id)).await;
        }
        tracing::Span::current().record("user_id", tracing::field::display(&user.user_id));
        if user.locked_at.is_some() {
            self.audit.record(Event::failed("login", "account locked").user(user_id)).await;
            return Err(ApiError::AccountDisabled);
        }
        let methods = self.second_factors(&user).await?;
        if methods.is_empty() {
            return Err(ApiError::MfaRequired(
                "this account has no second factor: sign in with a passkey and set up TOTP or verify an email address".into(),
            ));
        }
        let token = OpaqueToken::generate();
        let now = self.clock.now_ms();
        let ttl = self.settings.mfa.token_ttl;
        self.store.put_mfa_token(&token.hash(), user_id, now + ttl.as_millis() as i64, now).await?;
        self.audit.record(Event::ok("password_verified").user(user_id)).await;
        Ok(MfaChallenge {
            mfa_token: token.expose().to_owned(),
            methods,
            expires_in: ttl.as_secs(),
        })
    }

    async fn password_refused<T>(&self, attempt: Attempt, user_id: Option<&str>) -> Result<T> {
        self.throttle.attempt_failed(attempt).await?;
        self.audit
            .record(Event { user_id, ..Event::failed("login", "wrong password or unknown user") })
            .await;
        Err(ApiError::InvalidCredentials)
    }

    pub(super) async fn second_factors(&self, user: &UserRow) -> Result<Vec<&'static str>> {
        let counts = self.store.factor_counts(&user.user_id.to_string()).await?;
        let mut methods = Vec::new();
        if counts.totp > 0 {
            methods.push("totp");
        }
        if user.email_verified && user.email.is_some() {
            methods.push("email_otp");
        }
        Ok(methods)
    }

    /// The account behind a live mfa_token, throttled and not locked.
    async fn mfa_user(&self, token: &OpaqueToken, client: &ClientInfo) -> Result<UserRow> {
        self.throttle.check(GROUP, client, None).await?;
        let user_id = self
            .store
            .mfa_token_user(&token.hash(), self.clock.now_ms())
            .await?
            .ok_or(ApiError::InvalidCredentials)?;
        tracing::Span::current().record("user_id", tracing::field::display(&user_id));
        self.throttle.account(GROUP, &user_id).await?;
        self.throttle.ensure_not_locked(&subject(Some(&user_id), "")).await?;
        let user = self.store.find_user(&user_id).await?.ok_or(ApiError::InvalidCredentials)?;
        if user.locked_at.is_some() {
            return Err(ApiError::AccountDisabled);
        }
        Ok(user)
    }

    async fn code_refused<T>(&self, attempt: Attempt, user_id: &str, method: &str) -> Result<T> {
        self.throttle.attempt_failed(attempt).await?;
        let reason = format!("wrong {method} code");
        self.audit.record(Event::failed("login", &reason).user(user_id)).await;
        Err(ApiError::InvalidCode)
    }

    /// Second step with a TOTP code or a recovery code.
    pub async fn login_totp(
        &self,
        token: &OpaqueToken,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        // Told apart by their form, as `check_totp_or_recovery` does.
        let method =
            if code.is_six_digits() { FallbackMethod::Totp } else { FallbackMethod::RecoveryCode };
        let result = self.login_totp_or_recovery(token, code, client).await;
        self.metrics.fallback_login(method, &result);
        result
    }

    async fn login_totp_or_recovery(
        &self,
        token: &OpaqueToken,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let user = self.mfa_user(token, client).await?;
        let user_id = user.user_id.to_string();
        let attempt = self.throttle.begin_attempt(&subject(Some(&user_id), "")).await?;
        if !self.totp.check_totp_or_recovery(&user_id, &user.username, code).await? {
            return self.code_refused(attempt, &user_id, "totp").await;
        }
        let factor = if code.is_six_digits() { Factor::PasswordTotp } else { Factor::RecoveryCode };
        self.finish_fallback(token, &user, client, "totp", factor, attempt).await
    }

    /// Mails a sign-in code to the account's verified address.
    pub async fn login_email_send(
        &self,
        token: &OpaqueToken,
        client: &ClientInfo,
    ) -> Result<CodeSent> {
        let user = self.mfa_user(token, client).await?;
        let address = user.email.clone().filter(|_| user.email_verified).ok_or_else(|| {
            ApiError::Forbidden("this account has no verified email address".into())
        })?;
        self.mail_code(&user, LOGIN_CODE, &address, CodeMail::SignIn).await
    }

    pub async fn login_email_verify(
        &self,
        token: &OpaqueToken,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let result = self.login_email_code(token, code, client).await;
        self.metrics.fallback_login(FallbackMethod::EmailCode, &result);
        result
    }

    async fn login_email_code(
        &self,
        token: &OpaqueToken,
        code: &OneTimeCode,
        client: &ClientInfo,
    ) -> Result<TokenSet> {
        let user = self.mfa_user(token, client).await?;
        let user_id = user.user_id.to_string();
        let attempt = self.throttle.begin_attempt(&subject(Some(&user_id), "")).await?;
        if self.take_mailed_code(&user_id, LOGIN_CODE, code).await?.is_none() {
            return self.code_refused(attempt, &user_id, "email_otp").await;
        }
        self.finish_fallback(token, &user, client, "email_otp", Factor::PasswordMail, attempt).await
    }

    async fn finish_fallback(
        &self,
        token: &OpaqueToken,
        user: &UserRow,
        client: &ClientInfo,
        method: &str,
        factor: Factor,
        attempt: Attempt,
    ) -> Result<TokenSet> {
        let risk = RiskAttempt {
            user_id: &user.user_id,
            factor,
            user_verified: false,
            credential: None,
            synced: false,
            client,
            payment: None,
        };
        let passed = match self.risk.decide(&risk).await {
            Ok(passed) => passed,
            Err(refused) => {
                // The mfa_token is spent, as a sign-in would spend it: the
                // same token cannot be tried again to get past the rules.
                // Neither a failed nor a good sign-in for the lockout.
                self.store.spend_mfa_token(&token.hash()).await?;
                self.throttle.attempt_returned(attempt).await?;
                return Err(refused);
            }
        };
        let user_id = user.user_id;
        let grant =
            SessionGrant { user_id, roles: &user.roles, amr: FALLBACK_AMR, device_id: None };
        let session = self.tokens.new_session(&grant, client);
        let now = self.clock.now_ms();
        if !self.store.finish_mfa(&token.hash(), &session.row, &session.refresh.hash(), now).await?
        {
            // Another request used this mfa_token first.
            self.throttle.attempt_returned(attempt).await?;
            return Err(ApiError::InvalidCredentials);
        }
        self.throttle.attempt_succeeded(attempt).await?;
        let method = format!("password and {method}");
        self.audit.record(Event::ok("login").user(&user.user_id.to_string()).reason(&method)).await;
        self.risk.passed(passed).await;
        self.tokens.token_set(&session.row, &user.roles, &session.refresh)
    }

    /// Makes, stores and mails a six-digit code, after the resend wait.
    pub(super) async fn mail_code(
        &self,
        user: &UserRow,
        purpose: &str,
        address: &str,
        kind: CodeMail,
    ) -> Result<CodeSent> {
        let mfa = &self.settings.mfa;
        let user_id = user.user_id.to_string();
        let now = self.clock.now_ms();
        let resend = mfa.email_resend.as_millis() as i64;
        let wait = |sent_at: Millis| {
            self.metrics.rate_limited("email_resend");
            ApiError::RateLimited {
                retry_after_secs: u64::try_from((sent_at + resend - now + 999) / 1000).unwrap_or(1),
            }
        };
        if let Some(previous) = self.store.email_code(purpose, &user_id).await?
            && previous.sent_at + resend > now
            && previous.expires_at > now
        {
            return Err(wait(previous.sent_at));
        }
        let code = super::codes::six_digits();
        let ttl = mfa.email_code_ttl;
        let code_hash = self.codes.hash(purpose, &user_id, &code);
        let row = EmailCodeRow {
            purpose: purpose.to_owned(),
            user_id: user_id.clone(),
            code_hash: code_hash.clone(),
            address: address.to_owned(),
            tries: 0,
            sent_at: now,
            expires_at: now + ttl.as_millis() as i64,
        };
        // The store checks the wait again, so of two sends at once only
        // one stores (and mails) a code.
        if !self.store.put_email_code(&row, now - resend).await? {
            return Err(wait(now));
        }
        let minutes = ttl.as_secs().div_ceil(60).to_string();
        // The one who asked reads it: in the language of their request.
        let words = catalogue(requester_language(user));
        let (subject, template) = match kind {
            CodeMail::SignIn => (words.subject_sign_in_code, words.sign_in_code_body),
            CodeMail::VerifyEmail => {
                (words.subject_verify_email_code, words.verify_email_code_body)
            }
        };
        let values = [("name", user.display_name.as_str()), ("code", &code), ("minutes", &minutes)];
        let body = render(template, &values);
        if let Err(error) = self.mailer.send(address, subject, body).await {
            // Not stored as sent: the user can ask again at once. Only
            // this code goes; a newer one sent meanwhile stays.
            self.metrics.mail_failed("code");
            self.store.take_email_code(purpose, &user_id, &code_hash).await?;
            tracing::error!(error.cause_chain = ?error, "a one-time code could not be mailed");
            return Err(ApiError::Unavailable);
        }
        self.audit.record(Event::ok("code_mailed").user(&user_id).reason(purpose)).await;
        Ok(CodeSent { expires_in: ttl.as_secs() })
    }

    /// Uses up a mailed code if `code` is it; every try counts against the
    /// code's limit first. Returns the address it was sent to.
    pub(super) async fn take_mailed_code(
        &self,
        user_id: &str,
        purpose: &str,
        code: &OneTimeCode,
    ) -> Result<Option<String>> {
        let max_tries = i32::try_from(self.settings.mfa.email_code_max_tries).unwrap_or(5);
        let now = self.clock.now_ms();
        let Some(row) = self.store.try_email_code(purpose, user_id, max_tries, now).await? else {
            return Ok(None);
        };
        if !self.codes.matches(purpose, user_id, code.expose(), &row.code_hash) {
            return Ok(None);
        }
        if !self.store.take_email_code(purpose, user_id, &row.code_hash).await? {
            return Ok(None);
        }
        Ok(Some(row.address))
    }
}
