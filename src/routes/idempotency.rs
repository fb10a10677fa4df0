//! `Idempotency-Key` on the routes that take it (issue 20 item 6): the
//! extractor `Idempotent`, whose `run` wraps a handler's work. Without the
//! header the work runs as before. With it, the first request's work runs
//! on a task of its own, so that it finishes and stores its answer even
//! when its caller stops waiting (a dropped connection, the deadline): the
//! retry that follows then finds the answer rather than a half-done key.

use std::future::Future;
use std::pin::Pin;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue, SET_COOKIE};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, Responder, ResponseError};
use actix_web::{dev::Payload, web};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::context::{self, RequestId};
use crate::error::{ApiError, Result};
use crate::service::Core;
use crate::service::idempotency::{
    Answer, Begun, Caller, HEADER, IdempotencyKey, IdempotentRequest, REPLAYED_HEADER,
};

/// SHA-256 of a request's canonical JSON body, left in the request's
/// extensions by `extract::Body` when the request has a key.
#[derive(Clone, Copy)]
pub struct BodyDigest(pub [u8; 32]);

impl BodyDigest {
    /// The body re-written with sorted members and no spaces, so that a
    /// client's retry may serialise it differently and still match.
    pub fn of(body: &[u8]) -> BodyDigest {
        let canonical = serde_json::from_slice::<serde_json::Value>(body)
            .and_then(|value| serde_json::to_vec(&value));
        let digest = match canonical {
            Ok(canonical) => Sha256::digest(canonical),
            Err(_) => Sha256::digest(body),
        };
        BodyDigest(digest.into())
    }
}

/// A request that may carry an `Idempotency-Key`.
pub struct Idempotent {
    request: HttpRequest,
}

impl FromRequest for Idempotent {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(Idempotent { request: request.clone() }))
    }
}

type Work = Pin<Box<dyn Future<Output = Result<HttpResponse>>>>;

impl Idempotent {
    /// Runs `work` for `caller`, or with a key answers as the first
    /// request with that key did (`Idempotent-Replayed: true`). The key is
    /// checked once the caller is known: a malformed one is 400.
    pub async fn run<Fut, R>(self, caller: Caller, work: Fut) -> Result<HttpResponse>
    where
        Fut: Future<Output = Result<R>> + 'static,
        R: Responder + 'static,
    {
        let request = self.request;
        let Some(header) = request.headers().get(HEADER) else {
            return work.await.map(|answer| answer.respond_to(&request).map_into_boxed_body());
        };
        let key = IdempotencyKey::parse(header.as_bytes())?;
        let core = request
            .app_data::<web::Data<Core>>()
            .cloned()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
        let method = request.method().as_str();
        let route = request.match_pattern().unwrap_or_else(|| request.path().to_owned());
        let operation = format!("{method} {route}");
        let target = format!("{method} {}?{}", request.path(), request.query_string());
        let body_digest = request
            .extensions()
            .get::<BodyDigest>()
            .copied()
            .unwrap_or_else(|| BodyDigest::of(b""))
            .0;
        let asked = IdempotentRequest {
            key: &key,
            caller: &caller,
            operation: &operation,
            target: &target,
            body_digest,
        };
        let attempt = match core.idempotency.begin(&asked).await? {
            Begun::Replay(answer) => return Ok(replay(answer)),
            Begun::Run(attempt) => attempt,
        };
        let limit = core.idempotency.work_limit();
        let first = request.clone();
        let task = async move {
            let Ok(done) = tokio::time::timeout(limit, work).await else {
                // Dropped where it stood: its key stays pending until its
                // lease runs out.
                crate::store::suspect_connections();
                return Err(ApiError::Unavailable);
            };
            match done {
                Ok(answer) => {
                    let (answer, response) = capture(answer.respond_to(&first)).await?;
                    attempt.settle(&answer, None).await;
                    Ok(response)
                }
                Err(error) => {
                    // A 5xx is not kept, and is logged once, when answered.
                    let answer = if error.status_code().is_server_error() {
                        Answer {
                            status: error.status_code().as_u16(),
                            headers: vec![],
                            body: vec![],
                        }
                    } else {
                        capture(error.error_response()).await?.0
                    };
                    attempt.settle(&answer, Some(&error)).await;
                    Err(error)
                }
            }
        };
        actix_web::rt::spawn(as_this_request(Box::pin(task)))
            .await
            .map_err(|error| ApiError::Internal(anyhow::anyhow!("idempotent request: {error}")))?
    }
}

/// `work` with this request's id, client and span, which a task of its
/// own would otherwise lose (the audit trail records them).
fn as_this_request(work: Work) -> Work {
    let work = work.instrument(tracing::Span::current());
    match context::current_request_id() {
        Some(id) => Box::pin(context::scope(RequestId(id), context::current_client(), work)),
        None => Box::pin(work),
    }
}

/// The answer as stored, and the response to send (the same bytes).
async fn capture<B: MessageBody + 'static>(
    response: HttpResponse<B>,
) -> Result<(Answer, HttpResponse)> {
    let (head, body) = response.into_parts();
    let body = actix_web::body::to_bytes(body).await.map_err(|error| {
        let error: Box<dyn std::error::Error> = error.into();
        ApiError::Internal(anyhow::anyhow!("answer body: {error}"))
    })?;
    // A cookie belongs to the browser that got it, not to a retry.
    let headers = head
        .headers()
        .iter()
        .filter(|(name, _)| **name != SET_COOKIE)
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let answer = Answer { status: head.status().as_u16(), headers, body: body.to_vec() };
    Ok((answer, head.set_body(BoxBody::new(body))))
}

fn replay(answer: Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
        {
            response.append_header((name, value));
        }
    }
    response.insert_header((REPLAYED_HEADER, "true"));
    response.body(answer.body)
}
