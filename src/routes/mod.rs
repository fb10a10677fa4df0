//! HTTP routes: one file per table of the API contract. Only this module
//! knows actix; each handler extracts, calls one service function and maps
//! its result.

mod admin;
pub mod cors;
mod devices;
pub mod extract;
mod fallback;
mod idempotency;
mod me;
mod openapi;
mod operations;
mod passkeys;
mod schemas;
pub mod security_headers;
mod stepup;
mod tokens;
mod trusted;

use actix_web::web;

pub use openapi::ApiDoc;

/// Every API route; a method the route does not take answers 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let refuse = || web::to(extract::method_not_allowed);
    cfg.service(
        web::resource("/v1/register/start")
            .post(passkeys::register_start)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/register/finish")
            .post(passkeys::register_finish)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/login/start").post(passkeys::login_start).default_service(refuse()))
    .service(
        web::resource("/v1/login/finish").post(passkeys::login_finish).default_service(refuse()),
    )
    .service(
        web::resource("/v1/token/refresh").post(tokens::token_refresh).default_service(refuse()),
    )
    .service(web::resource("/v1/logout").post(tokens::logout).default_service(refuse()))
    .service(
        web::resource("/v1/login/password")
            .post(fallback::login_password)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/login/mfa/totp").post(fallback::login_totp).default_service(refuse()),
    )
    .service(
        web::resource("/v1/login/mfa/email/send")
            .post(fallback::login_email_send)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/login/mfa/email/verify")
            .post(fallback::login_email_verify)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/me").get(me::me_get).default_service(refuse()))
    .service(web::resource("/v1/me/password").put(me::password_put).default_service(refuse()))
    .service(web::resource("/v1/me/language").put(me::language_put).default_service(refuse()))
    .service(web::resource("/v1/me/email").post(me::email_post).default_service(refuse()))
    .service(web::resource("/v1/me/email/verify").post(me::email_verify).default_service(refuse()))
    .service(web::resource("/v1/me/totp/start").post(me::totp_start).default_service(refuse()))
    .service(web::resource("/v1/me/totp/finish").post(me::totp_finish).default_service(refuse()))
    .service(web::resource("/v1/me/totp").delete(me::totp_delete).default_service(refuse()))
    .service(
        web::resource("/v1/me/recovery-codes")
            .post(me::recovery_codes_post)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/me/devices").get(devices::devices_get).default_service(refuse()))
    .service(
        web::resource("/v1/me/devices/start")
            .post(devices::devices_start)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/me/devices/finish")
            .post(devices::devices_finish)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/me/devices/{device_id}")
            .patch(devices::device_patch)
            .delete(devices::device_delete)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/me/sessions").get(devices::sessions_get).default_service(refuse()))
    .service(
        web::resource("/v1/me/sessions/{session_id}")
            .delete(devices::session_delete)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/recovery/start").post(devices::recovery_start).default_service(refuse()),
    )
    .service(
        web::resource("/v1/recovery/cancel")
            .post(devices::recovery_cancel)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/me/passkey-recovery-codes")
            .post(devices::passkey_recovery_codes_post)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/enrol/start").post(devices::enrol_start).default_service(refuse()))
    .service(
        web::resource("/v1/enrol/finish").post(devices::enrol_finish).default_service(refuse()),
    )
    .service(web::resource("/v1/admin/users").get(admin::users_get).default_service(refuse()))
    .service(
        web::resource("/v1/admin/users/{user_id}").get(admin::user_get).default_service(refuse()),
    )
    .service(
        web::resource("/v1/admin/users/{user_id}/reset-devices")
            .post(admin::reset_devices)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/admin/users/{user_id}/devices/{device_id}")
            .delete(admin::device_delete)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/admin/users/{user_id}/lock").post(admin::lock).default_service(refuse()),
    )
    .service(
        web::resource("/v1/admin/users/{user_id}/unlock")
            .post(admin::unlock)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/admin/users/{user_id}/roles")
            .put(admin::roles_put)
            .default_service(refuse()),
    )
    .service(web::resource("/v1/admin/audit").get(admin::audit_get).default_service(refuse()))
    .service(web::resource("/v1/stepup/start").post(stepup::stepup_start).default_service(refuse()))
    .service(
        web::resource("/v1/stepup/finish").post(stepup::stepup_finish).default_service(refuse()),
    )
    .service(web::resource("/healthz").get(operations::healthz).default_service(refuse()))
    .service(web::resource("/readyz").get(operations::readyz).default_service(refuse()))
    .service(web::resource("/metrics").get(operations::metrics).default_service(refuse()))
    .service(
        web::resource("/.well-known/jwks.json").get(operations::jwks).default_service(refuse()),
    )
    .service(
        web::resource("/.well-known/openid-configuration")
            .get(operations::openid_configuration)
            .default_service(refuse()),
    )
    .service(web::resource("/openapi.json").get(operations::openapi).default_service(refuse()))
    .service(
        web::resource("/.well-known/assetlinks.json")
            .get(operations::asset_links)
            .default_service(refuse()),
    )
    .service(
        web::resource("/.well-known/apple-app-site-association")
            .get(operations::apple_app_site_association)
            .default_service(refuse()),
    )
    .service(
        web::resource("/.well-known/webauthn")
            .get(operations::related_origins)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/me/trusted-devices")
            .post(trusted::trusted_post)
            .get(trusted::trusted_get)
            .default_service(refuse()),
    )
    .service(
        web::resource("/v1/me/trusted-devices/{trusted_device_id}")
            .delete(trusted::trusted_delete)
            .default_service(refuse()),
    );
}
