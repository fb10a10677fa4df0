//! API contract, "Operations": health, readiness, keys and the API
//! description.

use actix_web::{HttpResponse, web};

use super::schemas::{
    AppleAppSiteAssociationJson, AssetLinksJson, HealthJson, JwkSetJson, OpenApiJson,
    RelatedOriginsJson,
};
use crate::error::{ApiError, Problem, Result};
use crate::service::well_known::OpenIdConfiguration;
use crate::service::{Core, Scrape};

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process is up: `{\"status\": \"ok\"}`", body = HealthJson)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "the database answers and takes writes (on SQLite, the file system is writable with room left): `{\"status\": \"ready\"}`", body = HealthJson),
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
    responses((status = 200, description = "RFC 7517 JSON Web Key Set of the signing, previous and next signing keys (a next key is published for the max-age before it signs; revoked keys never appear)", body = JwkSetJson)))]
pub async fn jwks(core: web::Data<Core>) -> Result<HttpResponse> {
    let keys = core.keys.jwks(core.clock.now_ms()).await?;
    // A new key is published this long before it signs (see keys).
    let max_age = jwks_cache_control();
    Ok(HttpResponse::Ok().insert_header(("cache-control", max_age)).json(keys))
}

#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "operations",
    responses(
        (status = 200, description = "OpenID Connect Discovery metadata for verifying passgate's tokens: the issuer, the JWKS and the signing algorithms (passgate is not an OpenID Provider: no authorization endpoint, no ID tokens)", body = OpenIdConfiguration),
        (status = 404, description = "not_found: tokens.issuer is not an http(s) URL, so no document can name absolute URLs under it", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn openid_configuration(core: web::Data<Core>) -> Result<HttpResponse> {
    let keys = core.keys.jwks(core.clock.now_ms()).await?;
    let mut algorithms: Vec<String> = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|key| key["alg"].as_str().map(str::to_owned))
        .collect();
    algorithms.sort();
    algorithms.dedup();
    let document = core.well_known.openid_configuration(algorithms).ok_or_else(|| {
        ApiError::NotFound("no discovery document: tokens.issuer is not an http(s) URL".to_owned())
    })?;
    // The algorithms follow the key set, so it is cached as long.
    Ok(HttpResponse::Ok().insert_header(("cache-control", jwks_cache_control())).json(document))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    description = "On the server.admin_bind listener only, when that is set (404 not_found on the other).",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics(core: web::Data<Core>) -> Result<HttpResponse> {
    let (pool_size, pool_idle) = core.store.pool_state();
    let signing_key_age = core.keys.signing_key_age(core.clock.now_ms()).ok();
    let scrape =
        Scrape { pool_size, pool_idle, hash_queue: core.passwords.queue_depth(), signing_key_age };
    let text = core.metrics.render(&scrape)?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

/// A configured association file, or 404 when that kind is not set up.
fn association(document: Option<serde_json::Value>, what: &str) -> Result<HttpResponse> {
    let document =
        document.ok_or_else(|| ApiError::NotFound(format!("no {what} is configured")))?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "public, max-age=3600")).json(document))
}

#[utoipa::path(get, path = "/.well-known/assetlinks.json", tag = "operations",
    responses(
        (status = 200, description = "Digital Asset Links for the Android apps in apps.android", body = AssetLinksJson),
        (status = 404, description = "not_found: no Android app is configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn asset_links(core: web::Data<Core>) -> Result<HttpResponse> {
    association(core.well_known.asset_links(), "Android app")
}

#[utoipa::path(get, path = "/.well-known/apple-app-site-association", tag = "operations",
    responses(
        (status = 200, description = "webcredentials for the iOS apps in apps.ios", body = AppleAppSiteAssociationJson),
        (status = 404, description = "not_found: no iOS app is configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn apple_app_site_association(core: web::Data<Core>) -> Result<HttpResponse> {
    association(core.well_known.apple_app_site_association(), "iOS app")
}

#[utoipa::path(get, path = "/.well-known/webauthn", tag = "operations",
    responses(
        (status = 200, description = "WebAuthn Related Origin Requests: the origins allowed to use this RP id", body = RelatedOriginsJson),
        (status = 404, description = "not_found: no related origin is configured", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn related_origins(core: web::Data<Core>) -> Result<HttpResponse> {
    association(core.well_known.related_origins(), "related origin")
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "this document", body = OpenApiJson)))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(super::ApiDoc::json())
}

/// The JWKS `Cache-Control`, from the time a new key waits before signing.
fn jwks_cache_control() -> String {
    format!("public, max-age={}", crate::service::keys::JWKS_MAX_AGE.as_secs())
}
