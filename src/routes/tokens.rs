//! API contract, "Tokens": refresh rotation and logout.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use super::schemas::TokenText;
use crate::domain::OpaqueToken;
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::tokens::TokenSet;

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    #[schema(value_type = TokenText)]
    refresh_token: OpaqueToken,
}

#[utoipa::path(post, path = "/v1/token/refresh", tag = "tokens",
    request_body = RefreshBody,
    responses(
        (status = 200, body = TokenSet),
        (status = 401, description = "invalid_credentials: unknown, retired (the session is then ended) or expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn token_refresh(
    core: web::Data<Core>,
    body: Body<RefreshBody>,
) -> Result<web::Json<TokenSet>> {
    Ok(web::Json(core.tokens.refresh(&body.refresh_token).await?))
}

#[utoipa::path(post, path = "/v1/logout", tag = "tokens",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "the session of that refresh token is ended (also when it already was)"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(core: web::Data<Core>, body: Body<RefreshBody>) -> Result<HttpResponse> {
    core.tokens.logout(&body.refresh_token).await?;
    Ok(HttpResponse::NoContent().finish())
}
