//! Trusted browsers (an addition to the contract's "The signed-in user",
//! issue 20 item 5): mark this browser trusted, list and remove them. The
//! browser is told by the `__Host-passgate-trusted` cookie, which only
//! passgate's own origin sends (`__Host-`: no Domain, Path=/, Secure;
//! SameSite=Strict) and no script reads (HttpOnly).

use actix_web::{HttpResponse, web};

use super::extract::Bearer;
use crate::context::{ClientInfo, TRUSTED_DEVICE_COOKIE};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::trusted::TrustedDevice;

/// The cookie that marks this browser trusted, or (`max_age` 0) that
/// tells it to forget it.
/// The token is base64url, so it needs no quoting.
fn cookie(value: &str, max_age_secs: u64) -> String {
    format!(
        "{TRUSTED_DEVICE_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; \
         Max-Age={max_age_secs}"
    )
}

#[utoipa::path(post, path = "/v1/me/trusted-devices", tag = "me", security(("bearer" = [])),
    responses(
        (status = 201, description = "this browser is trusted until expires_at; the answer sets the HttpOnly cookie `__Host-passgate-trusted` (Path=/; Secure; SameSite=Strict; Max-Age = trust.days). A browser already trusted gets a new token and its old record ends", body = TrustedDevice,
            headers(("set-cookie" = String, description = "__Host-passgate-trusted=<token>; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=<seconds>"))),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "passkey_required: it needs a user-verified passkey sign-in within mfa.fresh_auth_seconds (a password and a code are not enough)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: the account already has the most trusted browsers allowed (20)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn trusted_post(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
) -> Result<HttpResponse> {
    let trusted = core.trusted_devices.trust(&bearer.0, &client).await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::SET_COOKIE,
            cookie(trusted.token.expose(), trusted.max_age_secs),
        ))
        .json(trusted.device))
}

#[utoipa::path(get, path = "/v1/me/trusted-devices", tag = "me", security(("bearer" = [])),
    responses(
        (status = 200, description = "the live trusted browsers, newest first; `current` marks the one making the request", body = [TrustedDevice]),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn trusted_get(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
) -> Result<web::Json<Vec<TrustedDevice>>> {
    Ok(web::Json(core.trusted_devices.list(&bearer.0.sub, &client).await?))
}

#[utoipa::path(delete, path = "/v1/me/trusted-devices/{trusted_device_id}", tag = "me",
    security(("bearer" = [])),
    params(("trusted_device_id" = String, Path)),
    responses(
        (status = 204, description = "no longer trusted; when it was this browser, the answer also clears its cookie"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found: none of the caller's live trusted browsers has this id", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn trusted_delete(
    core: web::Data<Core>,
    bearer: Bearer,
    client: ClientInfo,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let revoked = core.trusted_devices.revoke(&bearer.0.sub, &path, &client).await?;
    let mut response = HttpResponse::NoContent();
    if revoked.was_current {
        response.insert_header((actix_web::http::header::SET_COOKIE, cookie("", 0)));
    }
    Ok(response.finish())
}
