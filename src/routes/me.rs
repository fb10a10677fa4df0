//! API contract, "The signed-in user".

use actix_web::web;

use super::extract::Bearer;
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::profile::Profile;

#[utoipa::path(get, path = "/v1/me", tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Profile),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me_get(core: web::Data<Core>, bearer: Bearer) -> Result<web::Json<Profile>> {
    Ok(web::Json(core.profile(&bearer.0.sub).await?))
}
