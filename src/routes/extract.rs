//! Request extractors and framework error mapping: every rejection the
//! framework makes (bad JSON, wrong type, oversized body, bad path or
//! query) comes out as a problem, never as actix's plain-text default.

use std::future::Future;
use std::pin::Pin;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, web};

use crate::context::ClientInfo;
use crate::error::ApiError;
use crate::net::TrustedProxies;
use crate::service::Core;
use crate::service::admin::AdminCaller;
use crate::service::tokens::AccessClaims;

/// Largest JSON body accepted (API contract: 413 above it).
pub const BODY_LIMIT: usize = 64 * 1024;

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(BODY_LIMIT).error_handler(|error, _| json_error(error).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge { limit: BODY_LIMIT }
        }
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("the body must be application/json".into())
        }
        JsonPayloadError::Deserialize(inner) if inner.is_data() => {
            ApiError::ValidationFailed(inner.to_string())
        }
        JsonPayloadError::Deserialize(inner) => {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
        other => ApiError::BadRequest(format!("unreadable body: {other}")),
    }
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _| {
        ApiError::NotFound(format!("no such resource: {error}")).into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
        ApiError::ValidationFailed(format!("bad query string: {error}")).into()
    })
}

pub async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such endpoint".into()))
}

pub async fn method_not_allowed() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

impl FromRequest for ClientInfo {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let no_proxies = TrustedProxies::default();
        let proxies = request
            .app_data::<web::Data<Core>>()
            .map_or(&no_proxies, |core| &core.settings.server.trusted_proxies);
        let client = crate::telemetry::client_info(request.headers(), request.peer_addr(), proxies);
        std::future::ready(Ok(client))
    }
}

/// A JSON request body. Unlike `web::Json`, a body that is not well-formed
/// JSON is always 400 `bad_request`, whatever its fields would have held:
/// when reading the fields fails on one that does not fit, the whole
/// body's syntax is checked before answering 422 (serde reads as it goes,
/// and would report a wrong-typed field before the broken syntax after it). Well-formed JSON with wrong fields is 422
/// `validation_failed`; a body over `BODY_LIMIT` is 413; one that is not
/// `application/json` is 415.
pub struct Body<T>(pub T);

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Body<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<actix_web::mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == actix_web::mime::APPLICATION
                    && (m.subtype() == actix_web::mime::JSON
                        || m.suffix() == Some(actix_web::mime::JSON))
            });
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        // Only a request with a key has its body's digest taken.
        let keyed = request
            .headers()
            .contains_key(crate::service::idempotency::HEADER)
            .then(|| request.clone());
        Box::pin(async move {
            if !json {
                return Err(ApiError::UnsupportedMediaType(
                    "the body must be application/json".into(),
                ));
            }
            if declared.is_some_and(|length| length > BODY_LIMIT) {
                return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
                let chunk =
                    chunk.map_err(|e| ApiError::BadRequest(format!("unreadable body: {e}")))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
                }
                body.extend_from_slice(&chunk);
            }
            // Every body of the API is an object; serde would also read a
            // struct from an array of its fields in order (`[null]` for
            // `{"username": null}`), which no client means to send.
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_some_and(|b| *b != b'{') {
                return match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Ok(_) => {
                        Err(ApiError::ValidationFailed("the body must be a JSON object".into()))
                    }
                    Err(syntax) => Err(ApiError::BadRequest(format!("malformed JSON: {syntax}"))),
                };
            }
            match serde_json::from_slice::<T>(&body) {
                Ok(value) => {
                    if let Some(request) = keyed {
                        request.extensions_mut().insert(super::idempotency::BodyDigest::of(&body));
                    }
                    Ok(Body(value))
                }
                // A field that does not fit: a 422 only if the whole body
                // is well-formed (checked only then, so a good body is
                // parsed once).
                Err(error) if error.is_data() => {
                    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                        Ok(_) => Err(ApiError::ValidationFailed(error.to_string())),
                        Err(syntax) => {
                            Err(ApiError::BadRequest(format!("malformed JSON: {syntax}")))
                        }
                    }
                }
                Err(error) => Err(ApiError::BadRequest(format!("malformed JSON: {error}"))),
            }
        })
    }
}

/// A request with a valid `Authorization: Bearer` access token.
pub struct Bearer(pub AccessClaims);

impl FromRequest for Bearer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let verified = verify_bearer(request);
        Box::pin(async move { Ok(Bearer(verified.await?)) })
    }
}

/// A request from an admin: a valid bearer token whose account holds the
/// admin role now (401 without a token, 403 for anyone else). The handler
/// never runs otherwise, and the service's admin operations each take the
/// `AdminCaller` inside.
pub struct Admin(pub AdminCaller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let core = request.app_data::<web::Data<Core>>().cloned();
        let verified = verify_bearer(request);
        Box::pin(async move {
            let claims = verified.await?;
            let core = core.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            Ok(Admin(core.admin.admin(claims).await?))
        })
    }
}

/// The claims of the request's bearer token, once verified.
fn verify_bearer(
    request: &HttpRequest,
) -> impl Future<Output = Result<AccessClaims, ApiError>> + 'static {
    let core = request.app_data::<web::Data<Core>>().cloned();
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // RFC 7235 §2.1: the scheme name is case-insensitive.
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
        .map(|(_, token)| token)
        .map(|t| t.trim().to_owned());
    async move {
        let core = core.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
        let token = token.ok_or(ApiError::Unauthorized)?;
        let claims = core.tokens.verify_access(&token).await?;
        tracing::Span::current().record("user_id", tracing::field::display(&claims.sub));
        Ok(claims)
    }
}
