//! The owner's side of the review queue (issue 20 item 3): a held sign-in
//! or payment, seen and appealed with the review's token, sent as
//! `Authorization: Review <token>`. No account session is needed: the
//! attempt that was held gave none.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use crate::error::{ApiError, Problem, Result};
use crate::service::Core;
use crate::service::reviews::ReviewStatus;

#[derive(Deserialize, ToSchema)]
pub struct AppealBody {
    /// Why this was you, for the admin who decides: 1 to 1000 characters.
    message: String,
}

/// The token of `Authorization: Review <token>`; 401 without one.
fn review_token(request: &HttpRequest) -> Result<String> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 7235 §2.1: the scheme name is case-insensitive.
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("review")))
        .map(|(_, token)| token.trim().to_owned())
        .filter(|token| !token.is_empty())
        .ok_or(ApiError::Unauthorized)
}

#[utoipa::path(get, path = "/v1/reviews/{review_id}", tag = "reviews",
    params(("review_id" = String, Path),
        ("Authorization" = String, Header, description = "`Review <review_token>`: the token of the 403 `held_for_review`, or of the link in the hold's mail")),
    responses(
        (status = 200, body = ReviewStatus),
        (status = 401, description = "unauthorized: no `Authorization: Review <token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such review, or not its token (the two look the same)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn review_status(
    core: web::Data<Core>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<web::Json<ReviewStatus>> {
    let token = review_token(&request)?;
    Ok(web::Json(core.reviews.status(&path, &token).await?))
}

#[utoipa::path(post, path = "/v1/reviews/{review_id}/appeal", tag = "reviews",
    params(("review_id" = String, Path),
        ("Authorization" = String, Header, description = "`Review <review_token>`: the token of the 403 `held_for_review`, or of the link in the hold's mail")),
    request_body = AppealBody,
    responses(
        (status = 200, body = ReviewStatus, description = "appealed; the admins are mailed"),
        (status = 401, description = "unauthorized: no `Authorization: Review <token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: no such review, or not its token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "review_closed: decided, expired, or already appealed (one appeal per review)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: the message is empty or over 1000 characters", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn review_appeal(
    core: web::Data<Core>,
    request: HttpRequest,
    path: web::Path<String>,
    body: Body<AppealBody>,
) -> Result<web::Json<ReviewStatus>> {
    let token = review_token(&request)?;
    Ok(web::Json(core.reviews.appeal(&path, &token, &body.message).await?))
}
