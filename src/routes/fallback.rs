//! API contract, "Fallback": a password, then a second factor.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use super::schemas::{CodeText, TokenText, UsernameText};
use crate::context::ClientInfo;
use crate::domain::{MfaToken, OneTimeCode, Password, Username};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::fallback::{CodeSent, MfaChallenge};
use crate::service::tokens::TokenSet;

#[derive(Deserialize, ToSchema)]
pub struct PasswordLoginBody {
    #[schema(value_type = UsernameText)]
    username: Username,
    #[schema(value_type = String, format = Password)]
    password: Password,
}

#[derive(Deserialize, ToSchema)]
pub struct MfaTokenBody {
    #[schema(value_type = TokenText)]
    mfa_token: MfaToken,
}

#[derive(Deserialize, ToSchema)]
pub struct MfaCodeBody {
    #[schema(value_type = TokenText)]
    mfa_token: MfaToken,
    /// Six digits, or (at /v1/login/mfa/totp) a recovery code.
    #[schema(value_type = CodeText)]
    code: OneTimeCode,
}

#[utoipa::path(post, path = "/v1/login/password", tag = "fallback",
    request_body = PasswordLoginBody,
    responses(
        (status = 200, body = MfaChallenge),
        (status = 401, description = "invalid_credentials: unknown user or wrong password, alike", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "account_locked (with Retry-After), or mfa_required: no second factor is set up", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (with Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_password(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<PasswordLoginBody>,
) -> Result<web::Json<MfaChallenge>> {
    Ok(web::Json(core.fallback.login_password(&body.username, &body.password, &client).await?))
}

#[utoipa::path(post, path = "/v1/login/mfa/totp", tag = "fallback",
    request_body = MfaCodeBody,
    responses(
        (status = 200, body = TokenSet),
        (status = 401, description = "invalid_code (wrong, replayed or used recovery code), invalid_credentials (unknown, expired or used mfa_token), or step_up_required (with needs and reasons: the risk rules want the account's passkey; the mfa_token is spent)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "account_locked (with Retry-After), held_for_review (with review_id, review_token and reasons) or risk_denied (with reasons)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (with Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_totp(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<MfaCodeBody>,
) -> Result<web::Json<TokenSet>> {
    Ok(web::Json(core.fallback.login_totp(&body.mfa_token.0, &body.code, &client).await?))
}

#[utoipa::path(post, path = "/v1/login/mfa/email/send", tag = "fallback",
    request_body = MfaTokenBody,
    responses(
        (status = 202, description = "a six-digit code is mailed to the verified address", body = CodeSent),
        (status = 401, description = "invalid_credentials (unknown, expired or used mfa_token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden (no verified address) or account_locked", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: a code was sent moments ago (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable: the mail server could not be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_email_send(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<MfaTokenBody>,
) -> Result<HttpResponse> {
    let sent = core.fallback.login_email_send(&body.mfa_token.0, &client).await?;
    Ok(HttpResponse::Accepted().json(sent))
}

#[utoipa::path(post, path = "/v1/login/mfa/email/verify", tag = "fallback",
    request_body = MfaCodeBody,
    responses(
        (status = 200, body = TokenSet),
        (status = 401, description = "invalid_code (wrong, expired or out of tries), invalid_credentials (mfa_token), or step_up_required (with needs and reasons: the risk rules want the account's passkey; the mfa_token is spent)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "account_locked (with Retry-After), held_for_review (with review_id, review_token and reasons) or risk_denied (with reasons)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (with Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_email_verify(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<MfaCodeBody>,
) -> Result<web::Json<TokenSet>> {
    Ok(web::Json(core.fallback.login_email_verify(&body.mfa_token.0, &body.code, &client).await?))
}
