//! API contract, "Admin": a bearer token whose `roles` holds `admin`; any
//! other token gets 403, none 401.

use actix_web::http::header::{self, CONTENT_DISPOSITION, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Admin, Body};
use super::idempotency::Idempotent;
use crate::domain::{DeviceId, UserId};
use crate::error::{ApiError, Problem, Result};
use crate::service::Core;
use crate::service::admin::{ResetOutcome, UserDetail, UserPage, UserSummary};
use crate::service::audit_export::AuditPage;
use crate::service::idempotency::Caller;
use crate::store::AuditFilter;

#[derive(Deserialize, IntoParams)]
pub struct UserQuery {
    /// Part of a username, display name or email address.
    #[serde(default)]
    q: String,
    /// 1 to 100, default 20.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReasonBody {
    /// Why; required for an action on another admin, and for a reset.
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct RolesBody {
    /// The account's roles after the change (`admin` is the one known).
    roles: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    user_id: Option<String>,
    event: Option<String>,
    /// RFC 3339 or Unix milliseconds; inclusive.
    since: Option<String>,
    /// RFC 3339 or Unix milliseconds; exclusive.
    until: Option<String>,
    /// `json` (default, paged) or `csv` (everything that matches, streamed).
    format: Option<String>,
    /// JSON page size, 1 to 1000, default 100.
    limit: Option<i64>,
    /// `next_cursor` of the previous JSON page.
    cursor: Option<String>,
    /// `oldest` first (default) or `newest` first; pages and CSV alike.
    order: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserQuery),
    responses(
        (status = 200, body = UserPage),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn users_get(
    core: web::Data<Core>,
    admin: Admin,
    query: web::Query<UserQuery>,
) -> Result<web::Json<UserPage>> {
    let page = core
        .admin
        .search_users(&admin.0, &query.q, query.limit.unwrap_or(20), query.cursor.as_deref())
        .await?;
    Ok(web::Json(page))
}

#[utoipa::path(get, path = "/v1/admin/users/{user_id}", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 200, body = UserDetail),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn user_get(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
) -> Result<web::Json<UserDetail>> {
    Ok(web::Json(core.admin.user_detail(&admin.0, &path.to_string()).await?))
}

#[utoipa::path(post, path = "/v1/admin/users/{user_id}/reset-devices", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer, marked `Idempotent-Replayed: true`, and changes nothing again (answers are kept 24 hours)")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = ResetOutcome, description = "sent with Cache-Control: no-store (it may carry the enrolment code)"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin; passkey_required: the admin's passkey sign-in is older than mfa.fresh_auth_seconds, or was a password and code", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: a reason is required; idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset_devices(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
    body: Body<ReasonBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let caller = Caller::admin(&admin.0);
    let work = async move {
        let reason = body.reason.as_deref().unwrap_or("");
        let outcome = core.admin.reset_devices(&admin.0, &path.to_string(), reason).await?;
        // It may carry the enrolment code, shown once: no cache keeps it.
        Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(outcome))
    };
    idempotent.run(caller, work).await
}

#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/devices/{device_id}", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), ("device_id" = String, Path), ("reason" = Option<String>, Query), ("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer, marked `Idempotent-Replayed: true`, and changes nothing again (answers are kept 24 hours)")),
    responses(
        (status = 204, description = "unbound"),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin (or, for lock, the admin's own account); passkey_required: needs the admin's passkey sign-in within mfa.fresh_auth_seconds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: a reason is required on an admin; idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn device_delete(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<(UserId, DeviceId)>,
    query: web::Query<ReasonBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let caller = Caller::admin(&admin.0);
    let work = async move {
        let (user_id, device_id) = path.into_inner();
        let reason = query.reason.as_deref();
        core.admin.admin_unbind_device(&admin.0, &user_id.to_string(), &device_id, reason).await?;
        Ok(HttpResponse::NoContent().finish())
    };
    idempotent.run(caller, work).await
}

#[utoipa::path(post, path = "/v1/admin/users/{user_id}/lock", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer, marked `Idempotent-Replayed: true`, and changes nothing again (answers are kept 24 hours)")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "locked; every session ended", body = UserSummary),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin (or, for lock, the admin's own account); passkey_required: needs the admin's passkey sign-in within mfa.fresh_auth_seconds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn lock(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
    body: Body<ReasonBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let caller = Caller::admin(&admin.0);
    idempotent.run(caller, set_locked(core, admin, path, body, true)).await
}

#[utoipa::path(post, path = "/v1/admin/users/{user_id}/unlock", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer, marked `Idempotent-Replayed: true`, and changes nothing again (answers are kept 24 hours)")),
    request_body = ReasonBody,
    responses(
        (status = 200, body = UserSummary),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin (or, for lock, the admin's own account); passkey_required: needs the admin's passkey sign-in within mfa.fresh_auth_seconds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn unlock(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
    body: Body<ReasonBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let caller = Caller::admin(&admin.0);
    idempotent.run(caller, set_locked(core, admin, path, body, false)).await
}

async fn set_locked(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
    body: Body<ReasonBody>,
    lock: bool,
) -> Result<web::Json<UserSummary>> {
    let user_id = path.to_string();
    Ok(web::Json(core.admin.set_locked(&admin.0, &user_id, lock, body.reason.as_deref()).await?))
}

#[utoipa::path(put, path = "/v1/admin/users/{user_id}/roles", tag = "admin", security(("bearer" = [])),
    params(("user_id" = String, Path), ("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer, marked `Idempotent-Replayed: true`, and changes nothing again (answers are kept 24 hours)")),
    request_body = RolesBody,
    responses(
        (status = 200, body = UserSummary),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin (or, for lock, the admin's own account); passkey_required: needs the admin's passkey sign-in within mfa.fresh_auth_seconds", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed: unknown role, or no reason for a change to an admin; idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn roles_put(
    core: web::Data<Core>,
    admin: Admin,
    path: web::Path<UserId>,
    body: Body<RolesBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let caller = Caller::admin(&admin.0);
    let work = async move {
        let user_id = path.to_string();
        let reason = body.reason.as_deref();
        let summary = core.admin.set_roles(Some(&admin.0), &user_id, &body.roles, reason).await?;
        Ok(web::Json(summary))
    };
    idempotent.run(caller, work).await
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Some(ms));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .map_err(|_| {
            ApiError::ValidationFailed(format!("{name}: not RFC 3339 or Unix milliseconds"))
        })
}

#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "JSON page, or with format=csv text/csv of every match (streamed); IPs and addresses masked", content(
            (AuditPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn audit_get(
    core: web::Data<Core>,
    admin: Admin,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse> {
    let query = query.into_inner();
    let filter = AuditFilter {
        user_id: query.user_id.filter(|u| !u.is_empty()),
        event: query.event.filter(|e| !e.is_empty()),
        since: time_param("since", query.since.as_deref())?,
        until: time_param("until", query.until.as_deref())?,
        after: query.cursor.filter(|c| !c.is_empty()),
        limit: query.limit.unwrap_or(100),
        newest_first: match query.order.as_deref().unwrap_or("oldest") {
            "oldest" => false,
            "newest" => true,
            other => {
                let problem = format!("order: {other:?} is not oldest or newest");
                return Err(ApiError::ValidationFailed(problem));
            }
        },
    };
    match query.format.as_deref().unwrap_or("json") {
        "json" => Ok(HttpResponse::Ok().json(core.admin.audit_page(&admin.0, filter).await?)),
        "csv" => {
            let lines = core.admin.clone().audit_csv(admin.0, filter).map(|line| match line {
                Ok(line) => Ok(web::Bytes::from(line)),
                Err(error) => {
                    tracing::error!(error.cause_chain = ?error, "audit export stopped");
                    // An error item aborts the chunked response.
                    Err(actix_web::error::ErrorInternalServerError("export failed"))
                }
            });
            Ok(HttpResponse::Ok()
                .insert_header((CONTENT_TYPE, "text/csv; charset=utf-8"))
                .insert_header((CONTENT_DISPOSITION, "attachment; filename=\"passgate-audit.csv\""))
                .streaming(lines))
        }
        other => Err(ApiError::ValidationFailed(format!("format: {other:?} is not json or csv"))),
    }
}
