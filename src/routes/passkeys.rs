//! API contract, "Passkeys": registration and sign-in ceremonies.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::extract::Body;
use super::schemas::{
    AssertionStarted, AuthenticationResponseJson, LabelText, RegistrationResponseJson,
    RegistrationStarted, UsernameText,
};
use crate::context::ClientInfo;
use crate::domain::{CeremonyId, DeviceName, DisplayName, EmailAddress, Username};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::passkey::{CeremonyStarted, RegisterStart};
use crate::service::tokens::TokenSet;

#[derive(Deserialize, ToSchema)]
pub struct RegisterStartBody {
    #[schema(value_type = UsernameText)]
    username: Username,
    #[schema(value_type = Option<LabelText>)]
    display_name: Option<DisplayName>,
    #[schema(value_type = Option<String>)]
    email: Option<EmailAddress>,
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterFinishBody {
    #[schema(value_type = String)]
    ceremony_id: CeremonyId,
    /// `PublicKeyCredential.toJSON()` of the new credential
    /// (`RegistrationResponseJSON`).
    #[schema(value_type = RegistrationResponseJson)]
    credential: RegisterPublicKeyCredential,
    #[schema(value_type = Option<LabelText>)]
    device_name: Option<DeviceName>,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginStartBody {
    /// Omit for a discoverable (username-less) sign-in.
    #[schema(value_type = Option<UsernameText>)]
    username: Option<Username>,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginFinishBody {
    #[schema(value_type = String)]
    ceremony_id: CeremonyId,
    /// `PublicKeyCredential.toJSON()` of the assertion
    /// (`AuthenticationResponseJSON`).
    #[schema(value_type = AuthenticationResponseJson)]
    credential: PublicKeyCredential,
}

#[utoipa::path(post, path = "/v1/register/start", tag = "passkeys",
    request_body = RegisterStartBody,
    responses(
        (status = 200, body = RegistrationStarted),
        (status = 409, description = "username_taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: too many registrations from this client address (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_start(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<RegisterStartBody>,
) -> Result<web::Json<CeremonyStarted>> {
    let body = body.into_inner();
    let started = core
        .passkeys
        .register_start(
            RegisterStart {
                username: body.username,
                display_name: body.display_name,
                email: body.email,
            },
            &client,
        )
        .await?;
    Ok(web::Json(started))
}

#[utoipa::path(post, path = "/v1/register/finish", tag = "passkeys",
    request_body = RegisterFinishBody,
    responses(
        (status = 201, description = "token set plus device_id", body = TokenSet),
        (status = 400, description = "webauthn_failed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ceremony_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "username_taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: too many registrations from this client address (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register_finish(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<RegisterFinishBody>,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let tokens = core
        .passkeys
        .register_finish(&body.ceremony_id, &body.credential, body.device_name, &client)
        .await?;
    Ok(HttpResponse::Created().json(tokens))
}

#[utoipa::path(post, path = "/v1/login/start", tag = "passkeys",
    request_body = LoginStartBody,
    responses(
        (status = 200, body = AssertionStarted),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_start(
    core: web::Data<Core>,
    body: Body<LoginStartBody>,
) -> Result<web::Json<CeremonyStarted>> {
    Ok(web::Json(core.passkeys.login_start(body.into_inner().username).await?))
}

#[utoipa::path(post, path = "/v1/login/finish", tag = "passkeys",
    request_body = LoginFinishBody,
    responses(
        (status = 200, body = TokenSet),
        (status = 401, description = "invalid_credentials, or step_up_required (with needs and reasons: the risk rules want a user-verified passkey)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "held_for_review (with review_id, review_token and reasons: the risk rules held it for an admin; see /review.html) or risk_denied (with reasons)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ceremony_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login_finish(
    core: web::Data<Core>,
    client: ClientInfo,
    body: Body<LoginFinishBody>,
) -> Result<web::Json<TokenSet>> {
    let body = body.into_inner();
    Ok(web::Json(core.passkeys.login_finish(&body.ceremony_id, &body.credential, &client).await?))
}
