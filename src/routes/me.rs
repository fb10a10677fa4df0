//! API contract, "The signed-in user".

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::{Bearer, Body};
use super::schemas::CodeText;
use crate::context::ClientInfo;
use crate::domain::{EmailAddress, Language, OneTimeCode, Password};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::fallback::CodeSent;
use crate::service::profile::Profile;
use crate::service::totp::{RecoveryCodes, TotpEnrolment};

#[utoipa::path(get, path = "/v1/me", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Profile),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me_get(core: web::Data<Core>, bearer: Bearer) -> Result<web::Json<Profile>> {
    Ok(web::Json(core.account.profile(&bearer.0.sub).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordBody {
    #[schema(value_type = String, format = Password)]
    password: Password,
    /// Needed to change an existing password unless the session began
    /// with a passkey within `mfa.fresh_auth_seconds`.
    #[schema(value_type = Option<String>, format = Password)]
    current_password: Option<Password>,
}

#[derive(Deserialize, ToSchema)]
pub struct EmailBody {
    #[schema(value_type = String, example = "alice@example.com")]
    email: EmailAddress,
}

#[derive(Deserialize, ToSchema)]
pub struct CodeBody {
    #[schema(value_type = CodeText)]
    code: OneTimeCode,
}

#[utoipa::path(put, path = "/v1/me/password", tag = "me",
    security(("bearer" = [])),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "password set"),
        (status = 401, description = "unauthorized, or invalid_credentials (wrong current_password)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: without current_password it needs a passkey sign-in within mfa.fresh_auth_seconds; account_locked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: too short, too long, too common, or the username", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn password_put(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
    body: Body<PasswordBody>,
) -> Result<HttpResponse> {
    core.account
        .set_password(&bearer.0, &body.password, body.current_password.as_ref(), &client)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
pub struct LanguageBody {
    /// The language of the account's mails.
    #[schema(schema_with = language_schema)]
    language: Language,
}

fn language_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(Language::ALL.map(Language::tag)))
        .examples(["zh-CN"])
        .build()
}

#[utoipa::path(put, path = "/v1/me/language", tag = "me",
    security(("bearer" = [])),
    request_body = LanguageBody,
    responses(
        (status = 204, description = "the account's mails are written in this language from now on"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: not \"en\" or \"zh-CN\"", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn language_put(
    core: web::Data<Core>,
    bearer: Bearer,
    body: Body<LanguageBody>,
) -> Result<HttpResponse> {
    core.account.set_language(&bearer.0.sub, body.language).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/me/email", tag = "me",
    security(("bearer" = [])),
    request_body = EmailBody,
    responses(
        (status = 202, description = "address stored unverified; a code is mailed to it", body = CodeSent),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: one without needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited (a code was sent moments ago)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "unavailable: the mail server could not be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn email_post(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
    body: Body<EmailBody>,
) -> Result<HttpResponse> {
    let sent = core.account.set_email(&bearer.0, &body.email, &client).await?;
    Ok(HttpResponse::Accepted().json(sent))
}

#[utoipa::path(post, path = "/v1/me/email/verify", tag = "me",
    security(("bearer" = [])),
    request_body = CodeBody,
    responses(
        (status = 204, description = "address verified"),
        (status = 400, description = "invalid_code: wrong, expired or out of tries", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn email_verify(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
    body: Body<CodeBody>,
) -> Result<HttpResponse> {
    core.account.verify_email(&bearer.0.sub, &body.code, &client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/me/totp/start", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a new secret, inactive until confirmed", body = TotpEnrolment),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: one without needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: TOTP is already set up", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_start(core: web::Data<Core>, bearer: Bearer) -> Result<web::Json<TotpEnrolment>> {
    Ok(web::Json(core.totp.totp_start(&bearer.0).await?))
}

#[utoipa::path(post, path = "/v1/me/totp/finish", tag = "me",
    security(("bearer" = [])),
    request_body = CodeBody,
    responses(
        (status = 200, description = "TOTP active; ten recovery codes, shown this once", body = RecoveryCodes),
        (status = 400, description = "invalid_code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: one without needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no enrolment in progress", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_finish(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
    body: Body<CodeBody>,
) -> Result<web::Json<RecoveryCodes>> {
    Ok(web::Json(core.totp.totp_finish(&bearer.0, &body.code, &client).await?))
}

#[utoipa::path(delete, path = "/v1/me/totp", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "TOTP and its recovery codes removed"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: one without needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: TOTP is not set up", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn totp_delete(core: web::Data<Core>, bearer: Bearer) -> Result<HttpResponse> {
    core.totp.totp_delete(&bearer.0).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/me/recovery-codes", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "ten new recovery codes; the old ones no longer work", body = RecoveryCodes),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: one without needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: TOTP is not set up", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn recovery_codes_post(
    core: web::Data<Core>,
    bearer: Bearer,
) -> Result<web::Json<RecoveryCodes>> {
    Ok(web::Json(core.totp.regenerate_recovery_codes(&bearer.0).await?))
}
