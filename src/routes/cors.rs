//! CORS for the pages of other origins listed in `server.cors_origins` (a
//! wallet front end on its own origin, say). Off when the list is empty:
//! then no response carries a CORS header and browsers keep other origins
//! from reading any answer, as before.
//!
//! Credentials mode is not allowed: passgate sets no cookies, tokens ride
//! in `Authorization`, which a page of an allowed origin sends itself.

use std::future::Future;

use actix_cors::{Cors, CorsError};
use actix_web::ResponseError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, header};
use actix_web::middleware::Condition;

use crate::error::ApiError;

/// How long a browser may keep a preflight's answer (Chromium caps it at
/// two hours, Firefox at one day); the list changes only with a restart.
const PREFLIGHT_MAX_AGE_SECONDS: usize = 3600;

/// The CORS middleware for `origins` (already validated as exact
/// origins), or a no-op when there are none.
pub fn cors(origins: &[String]) -> Condition<Cors> {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("idempotency-key"),
        ])
        // A page quotes the request id when reporting an error, and waits
        // as long as a 429 or a lockout says.
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(PREFLIGHT_MAX_AGE_SECONDS);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    Condition::new(!origins.is_empty(), cors)
}

/// Settles what the CORS middleware leaves: its own refusals (a preflight
/// from an origin not listed, or asking for a method or header the API
/// does not take), which it writes as plain text, become the problem+json
/// every other error is, with its request id; and an answer that grants no
/// origin carries no CORS header at all (the middleware would add
/// `Access-Control-Expose-Headers` to every answer, to curl's too).
pub fn tidy_cors<S, B>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let response = service.call(request);
    async move {
        // The deadline's 503 is made further out, from the error; the CORS
        // middleware has added its headers to it by a mapper, after which
        // this one runs.
        let response = response.await.map_err(|mut error| {
            error.add_response_mapper(|mut response| {
                drop_ungranted(response.headers_mut());
                response
            });
            error
        })?;
        let refusal = response.response().error().and_then(|e| e.as_error::<CorsError>());
        let Some(refusal) = refusal else {
            let mut response = response.map_into_boxed_body();
            drop_ungranted(response.headers_mut());
            return Ok(response);
        };
        let detail = match refusal {
            CorsError::OriginNotAllowed => {
                "this origin may not call the API from a browser (see server.cors_origins)"
                    .to_owned()
            }
            other => format!("CORS preflight refused: {other}"),
        };
        let problem = ApiError::BadRequest(detail).error_response();
        let (request, _) = response.into_parts();
        Ok(ServiceResponse::new(request, problem))
    }
}

/// An answer that grants no origin keeps no CORS header.
fn drop_ungranted(headers: &mut HeaderMap) {
    if !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.remove(header::ACCESS_CONTROL_EXPOSE_HEADERS);
    }
}
