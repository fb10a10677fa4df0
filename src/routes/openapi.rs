//! The OpenAPI document served at `/openapi.json`: the paths declared on
//! the handlers, plus what holds for many operations at once (the answers
//! any route may give, the links from a ceremony's start to its finish)
//! added here, so that no handler can leave them out.

use std::sync::LazyLock;

use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi};

use super::{admin, devices, fallback, me, operations, passkeys, schemas, stepup, tokens, trusted};
use crate::error::CODES;

use crate::error::Problem;
use crate::service::admin::{ResetOutcome, UserDetail, UserPage, UserSummary};
use crate::service::devices::{Device, Session};
use crate::service::fallback::{CodeSent, MfaChallenge};
use crate::service::profile::Profile;
use crate::service::stepup::Authorization;
use crate::service::tokens::TokenSet;
use crate::service::totp::{RecoveryCodes, TotpEnrolment};
use crate::service::trusted::TrustedDevice;
use crate::service::well_known::OpenIdConfiguration;
use crate::store::AuditRow;

#[derive(OpenApi)]
#[openapi(
    info(title = "passgate", description = "FIDO2/WebAuthn passwordless authentication server. Errors are RFC 9457 application/problem+json with a stable `code`; every response carries `x-request-id`."),
    paths(
        passkeys::register_start, passkeys::register_finish,
        passkeys::login_start, passkeys::login_finish,
        tokens::token_refresh, tokens::logout,
        fallback::login_password, fallback::login_totp,
        fallback::login_email_send, fallback::login_email_verify,
        me::me_get, me::password_put, me::language_put, me::email_post, me::email_verify,
        me::totp_start, me::totp_finish, me::totp_delete, me::recovery_codes_post,
        devices::devices_get, devices::devices_start, devices::devices_finish,
        devices::device_patch, devices::device_delete, devices::sessions_get,
        devices::session_delete, devices::passkey_recovery_codes_post, devices::recovery_start, devices::recovery_cancel, devices::enrol_start, devices::enrol_finish,
        admin::users_get, admin::user_get, admin::reset_devices, admin::device_delete,
        admin::lock, admin::unlock, admin::roles_put, admin::audit_get,
        stepup::stepup_start, stepup::stepup_finish,
        operations::healthz, operations::readyz, operations::metrics, operations::jwks,
        operations::openid_configuration,
        operations::openapi, operations::asset_links, operations::apple_app_site_association,
        operations::related_origins,
        trusted::trusted_post, trusted::trusted_get, trusted::trusted_delete,
    ),
    components(schemas(
        Problem, TokenSet, Profile, Authorization, MfaChallenge, CodeSent,
        TotpEnrolment, RecoveryCodes, Device, Session, UserPage, UserSummary, UserDetail,
        ResetOutcome, AuditRow, OpenIdConfiguration,
        TrustedDevice,
    )),
    modifiers(&BearerScheme, &WireSchemas, &GenericRefusals),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

impl ApiDoc {
    /// The document as served: built once, it never changes at run time.
    pub fn json() -> &'static str {
        static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
            // Serialising plain structs cannot fail; the API tests read it.
            let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
            add_ceremony_links(&mut document);
            document.to_string()
        });
        &DOCUMENT
    }
}

/// The WebAuthn and transaction schemas, and `Problem.code` as the closed
/// list of contract codes, so that a response with any other code breaks
/// the schema.
struct WireSchemas;

impl Modify for WireSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.extend(schemas::all());
        if let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem") {
            let code = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(CODES.iter().copied()))
                .description(Some("stable: clients branch on it"));
            problem.properties.insert("code".into(), RefOr::T(Schema::Object(code.build())));
        }
    }
}

/// Answers many routes can give, whatever their own tables say, each
/// with the kind of operation it applies to.
const GENERIC_REFUSALS: [(&str, &str, AppliesTo); 6] = [
    (
        "503",
        "unavailable: the database cannot be reached, or the request outlived server.request_timeout_seconds",
        |_| true,
    ),
    (
        "422",
        "validation_failed: a value of the right type that is not allowed (a username, code or name out of range, say)",
        |op| takes_body(op) || op.parameters.as_ref().is_some_and(|p| !p.is_empty()),
    ),
    ("400", "bad_request: the body is not JSON, or not of this shape", takes_body),
    ("413", "payload_too_large: the body is larger than 64 KiB", takes_body),
    ("415", "bad_request: the body is not application/json", takes_body),
    ("401", "unauthorized: no bearer token, or one that is forged, expired or revoked", |op| {
        op.security.as_ref().is_some_and(|s| !s.is_empty())
    }),
];

type AppliesTo = fn(&Operation) -> bool;

fn takes_body(operation: &Operation) -> bool {
    operation.request_body.is_some()
}

/// Adds [`GENERIC_REFUSALS`] to every operation they apply to, so that no
/// handler's table can leave one out.
struct GenericRefusals;

impl Modify for GenericRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations_of(item) {
                for (status, description, applies) in GENERIC_REFUSALS {
                    if applies(operation) {
                        add_refusal(operation, status, description);
                    }
                }
            }
        }
    }
}

fn operations_of(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds a problem+json answer, or where the handler's table already has
/// this status, leaves its own description and body.
fn add_refusal(operation: &mut Operation, status: &str, description: &str) {
    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| {
        let problem = ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"))));
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", problem.build())
                .build(),
        )
    });
}

/// OpenAPI links from each ceremony's start to its finish, carrying the
/// `ceremony_id`: a client generator (and the fuzzer's stateful phase)
/// then finishes a ceremony the server really started, which reaches the
/// WebAuthn verifier instead of stopping at `ceremony_not_found`. Written
/// into the JSON: utoipa 5 serialises its `Link` with snake_case members
/// (`operation_id`), which no OpenAPI reader knows.
fn add_ceremony_links(document: &mut Value) {
    const CEREMONIES: [(&str, &str); 5] = [
        ("/v1/register/start", "register_finish"),
        ("/v1/login/start", "login_finish"),
        ("/v1/me/devices/start", "devices_finish"),
        ("/v1/enrol/start", "enrol_finish"),
        ("/v1/stepup/start", "stepup_finish"),
    ];
    for (start, finish) in CEREMONIES {
        let pointer = format!("/paths/{}/post/responses/200", start.replace('/', "~1"));
        let Some(Value::Object(ok)) = document.pointer_mut(&pointer) else { continue };
        let links = ok.entry("links").or_insert_with(|| json!({}));
        links[finish] = json!({
            "operationId": finish,
            "requestBody": { "ceremony_id": "$response.body#/ceremony_id" },
            "description": "finish the ceremony this call started",
        });
    }
}
