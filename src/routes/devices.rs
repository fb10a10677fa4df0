//! API contract, "The signed-in user": bound devices and sessions; and the
//! enrolment ceremony (an addition) for binding a passkey with the code an
//! admin's device reset mailed.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;
use webauthn_rs::prelude::RegisterPublicKeyCredential;

use super::extract::{Bearer, Body};
use super::schemas::{
    CodeText, LabelText, RegistrationResponseJson, RegistrationStarted, TokenText, UsernameText,
};
use crate::context::ClientInfo;
use crate::domain::{
    CeremonyId, DeviceId, DeviceName, OneTimeCode, OpaqueToken, SessionId, Username,
};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::devices::{Device, Session};
use crate::service::passkey::CeremonyStarted;
use crate::service::tokens::TokenSet;
use crate::service::totp::RecoveryCodes;

#[derive(Deserialize, ToSchema)]
pub struct BindFinishBody {
    #[schema(value_type = String)]
    ceremony_id: CeremonyId,
    /// `PublicKeyCredential.toJSON()` of the new credential.
    #[schema(value_type = RegistrationResponseJson)]
    credential: RegisterPublicKeyCredential,
    #[schema(value_type = Option<LabelText>)]
    device_name: Option<DeviceName>,
}

#[derive(Deserialize, ToSchema)]
pub struct RenameBody {
    #[schema(value_type = LabelText)]
    name: DeviceName,
}

#[derive(Deserialize, ToSchema)]
pub struct EnrolStartBody {
    #[schema(value_type = UsernameText)]
    username: Username,
    /// The enrolment code from the mail, or a passkey recovery code
    /// (`xxxxx-xxxxx`).
    #[schema(value_type = CodeText)]
    code: OneTimeCode,
}

#[derive(Deserialize, ToSchema)]
pub struct RecoveryStartBody {
    #[schema(value_type = UsernameText)]
    username: Username,
}

#[derive(Deserialize, ToSchema)]
pub struct RecoveryCancelBody {
    /// The token from the cancel link of the recovery mail.
    #[schema(value_type = TokenText)]
    token: OpaqueToken,
}

/// What `POST /v1/recovery/start` answers, whatever the name.
#[derive(serde::Serialize, ToSchema)]
pub struct RecoveryRequested {
    /// How long after the request a mailed code starts working.
    delay_seconds: u64,
}

#[utoipa::path(get, path = "/v1/me/devices", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, body = [Device]),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn devices_get(core: web::Data<Core>, bearer: Bearer) -> Result<web::Json<Vec<Device>>> {
    Ok(web::Json(core.devices.list(&bearer.0.sub).await?))
}

#[utoipa::path(post, path = "/v1/me/devices/start", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, body = RegistrationStarted),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: an account with a passkey binds another only from a passkey sign-in within mfa.fresh_auth_seconds; forbidden: an account without one needs a sign-in that recent", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn devices_start(
    core: web::Data<Core>,
    bearer: Bearer,
) -> Result<web::Json<CeremonyStarted>> {
    Ok(web::Json(core.devices.bind_start(&bearer.0).await?))
}

#[utoipa::path(post, path = "/v1/me/devices/finish", tag = "me", security(("bearer" = [])),
    request_body = BindFinishBody,
    responses(
        (status = 201, body = Device),
        (status = 400, description = "webauthn_failed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ceremony_not_found", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn devices_finish(
    core: web::Data<Core>,
    bearer: Bearer,
    body: Body<BindFinishBody>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let device = core
        .devices
        .bind_finish(&bearer.0, &body.ceremony_id, &body.credential, body.device_name)
        .await?;
    Ok(HttpResponse::Created().json(device))
}

#[utoipa::path(patch, path = "/v1/me/devices/{device_id}", tag = "me", security(("bearer" = [])),
    params(("device_id" = String, Path)),
    request_body = RenameBody,
    responses(
        (status = 200, body = Device),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn device_patch(
    core: web::Data<Core>,
    bearer: Bearer,
    path: web::Path<DeviceId>,
    body: Body<RenameBody>,
) -> Result<web::Json<Device>> {
    Ok(web::Json(core.devices.rename_device(&bearer.0.sub, &path, &body.name).await?))
}

#[utoipa::path(delete, path = "/v1/me/devices/{device_id}", tag = "me", security(("bearer" = [])),
    params(("device_id" = String, Path)),
    responses(
        (status = 204, description = "unbound; the sessions it began are ended"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: needs a passkey sign-in within mfa.fresh_auth_seconds; forbidden: the last way to sign in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn device_delete(
    core: web::Data<Core>,
    bearer: Bearer,
    path: web::Path<DeviceId>,
) -> Result<HttpResponse> {
    core.devices.unbind_own_device(&bearer.0, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/me/sessions", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, body = [Session]),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sessions_get(
    core: web::Data<Core>,
    bearer: Bearer,
) -> Result<web::Json<Vec<Session>>> {
    Ok(web::Json(core.devices.sessions(&bearer.0).await?))
}

#[utoipa::path(delete, path = "/v1/me/sessions/{session_id}", tag = "me", security(("bearer" = [])),
    params(("session_id" = String, Path)),
    responses(
        (status = 204, description = "ended; its refresh token no longer works"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn session_delete(
    core: web::Data<Core>,
    bearer: Bearer,
    path: web::Path<SessionId>,
) -> Result<HttpResponse> {
    core.devices.end_session(&bearer.0.sub, &path.to_string()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Passkey recovery codes: ten, shown once, each able to start one
/// enrolment (`/v1/enrol/start` with the username and the code) when every
/// passkey is lost.
#[utoipa::path(post, path = "/v1/me/passkey-recovery-codes", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "ten new passkey recovery codes, shown this once; the old ones no longer work", body = RecoveryCodes),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: only a passkey sign-in within mfa.fresh_auth_seconds may make them", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn passkey_recovery_codes_post(
    core: web::Data<Core>,
    bearer: Bearer,
) -> Result<web::Json<RecoveryCodes>> {
    Ok(web::Json(core.devices.make_recovery_codes(&bearer.0).await?))
}

/// Account recovery by the verified address (an extension): the answer is
/// the same whether or not the account exists or has a verified address.
#[utoipa::path(post, path = "/v1/recovery/start", tag = "passkeys",
    request_body = RecoveryStartBody,
    responses(
        (status = 202, description = "if the account has a verified address and no code pending, a one-time code is mailed to it that binds a new passkey at /v1/enrol/start only after delay_seconds, with a link to cancel", body = RecoveryRequested),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn recovery_start(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<RecoveryStartBody>,
) -> Result<HttpResponse> {
    core.devices.request_mail_recovery(&body.username, &client).await?;
    let delay_seconds = core.settings.mfa.mail_recovery_delay.as_secs();
    Ok(HttpResponse::Accepted().json(RecoveryRequested { delay_seconds }))
}

#[utoipa::path(post, path = "/v1/recovery/cancel", tag = "passkeys",
    request_body = RecoveryCancelBody,
    responses(
        (status = 204, description = "the pending recovery is void; its code no longer works"),
        (status = 401, description = "invalid_code: no pending recovery has this token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn recovery_cancel(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<RecoveryCancelBody>,
) -> Result<HttpResponse> {
    core.devices.cancel_mail_recovery(&body.token, &client).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/v1/enrol/start", tag = "passkeys",
    request_body = EnrolStartBody,
    responses(
        (status = 200, body = RegistrationStarted),
        (status = 401, description = "invalid_code: unknown user, or a wrong, expired or used enrolment code or passkey recovery code", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enrol_start(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<EnrolStartBody>,
) -> Result<web::Json<CeremonyStarted>> {
    Ok(web::Json(core.devices.enrol_start(&body.username, &body.code, &client).await?))
}

#[utoipa::path(post, path = "/v1/enrol/finish", tag = "passkeys",
    request_body = BindFinishBody,
    responses(
        (status = 201, description = "token set plus device_id", body = TokenSet),
        (status = 400, description = "webauthn_failed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "invalid_code: the code was used meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ceremony_not_found", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enrol_finish(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<BindFinishBody>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let tokens = core
        .devices
        .enrol_finish(&body.ceremony_id, &body.credential, body.device_name, &client)
        .await?;
    Ok(HttpResponse::Created().json(tokens))
}
