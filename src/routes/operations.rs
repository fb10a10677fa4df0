//! API contract, "Operations": health, readiness, keys and the API
//! description.

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use crate::error::{ApiError, Problem, Result};
use crate::service::Core;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "the database answers"),
        (status = 503, description = "unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(core: web::Data<Core>) -> Result<HttpResponse> {
    core.store.ping().await.map_err(|error| {
        tracing::error!(error.cause_chain = ?error, "readiness check failed");
        ApiError::Unavailable
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "RFC 7517 JSON Web Key Set of the current and previous signing keys")))]
pub async fn jwks(core: web::Data<Core>) -> Result<HttpResponse> {
    let keys = core.keys.jwks().await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "public, max-age=300")).json(keys))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")))]
pub async fn metrics(core: web::Data<Core>) -> Result<HttpResponse> {
    let (size, idle) = core.store.pool_state();
    let text = core.metrics.render(size, idle)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::ApiDoc::openapi())
}
