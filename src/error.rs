//! The one error type that reaches the wire. Every failure becomes an
//! RFC 9457 `application/problem+json` body whose `code` is a stable string
//! from the API contract, so clients branch on it rather than on prose.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::context::{REQUEST_ID_HEADER, current_request_id};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    ValidationFailed(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// A change that only a recent passkey sign-in may make: a password
    /// and a code can be relayed by a phishing page, a passkey cannot.
    #[error("{0}")]
    PasskeyRequired(String),
    #[error("{0}")]
    NotFound(String),
    #[error("that username is already registered")]
    UsernameTaken,
    #[error("the credentials could not be verified")]
    InvalidCredentials,
    #[error("unknown, expired or already used ceremony_id")]
    CeremonyNotFound,
    #[error("{0}")]
    WebauthnFailed(String),
    #[error("too many requests; retry later")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "too many failed sign-ins: this account's password sign-in is locked for a while (passkey sign-in stays open)"
    )]
    AccountLocked { retry_after_secs: u64 },
    #[error("this account is locked")]
    AccountDisabled,
    /// Too many failed passwords or codes in a row: the fallback stays
    /// closed until a passkey sign-in or an admin unlock.
    #[error(
        "too many failed sign-ins: password sign-in is locked until you sign in with a passkey or an administrator unlocks it"
    )]
    FallbackLocked,
    #[error("{0}")]
    MfaRequired(String),
    /// A wrong, expired or used-up one-time code during sign-in (401).
    #[error("the code is wrong, expired or used up")]
    InvalidCode,
    /// The same, while setting up a factor (400: the session is fine).
    #[error("the code is wrong, expired or used up")]
    InvalidSetupCode,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
    /// The risk rules want more proof than this sign-in or payment gave:
    /// `needs` says what ("passkey" or "second_factor").
    #[error("this needs a further check before it can go through: {}", needs)]
    StepUpRequired { needs: &'static str, reasons: RiskReasons },
    /// The risk rules held the attempt for an administrator to review; the
    /// owner sees it, and may appeal, with `review_token`.
    #[error("this was held for review by an administrator; you can see why and appeal")]
    HeldForReview { review_id: String, review_token: ReviewToken, reasons: RiskReasons },
    #[error("this was refused by the risk rules")]
    RiskDenied { reasons: RiskReasons },
    /// An `Idempotency-Key` sent before with another request (issue 20).
    #[error("this Idempotency-Key was used with another request; use a new key for a new request")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still running.
    #[error("the first request with this Idempotency-Key is still being processed; retry shortly")]
    IdempotencyInProgress { retry_after_secs: u64 },
}

/// The reasons of a risk decision, as the problem's `reasons` member: an
/// array of `{rule, score, words}` (the service's `risk::Reason`).
pub type RiskReasons = serde_json::Value;

/// A held attempt's review token: shown once in the problem body, never
/// in a log (Debug hides it).
#[derive(Clone)]
pub struct ReviewToken(pub String);

impl std::fmt::Debug for ReviewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReviewToken(<redacted>)")
    }
}

/// The problem+json body. `request_id` ties a user's error report to the
/// log line of the request that failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `step_up_required`: what would let it through, "passkey" or
    /// "second_factor".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
    /// `held_for_review`: the review, for `GET /v1/reviews/{review_id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<String>,
    /// `held_for_review`: shown once; `Authorization: Review <token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_token: Option<String>,
    /// The risk rules that matched: `[{rule, score, words}]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub reasons: Option<serde_json::Value>,
}

/// Every `code` a problem may carry: the contract's list, plus
/// `passkey_required` (docs/api-notes.md). /openapi.json gives it as the
/// enum of `Problem.code`.
pub const CODES: &[&str] = &[
    "bad_request",
    "validation_failed",
    "unauthorized",
    "forbidden",
    "passkey_required",
    "not_found",
    "username_taken",
    "invalid_credentials",
    "ceremony_not_found",
    "webauthn_failed",
    "mfa_required",
    "invalid_code",
    "account_locked",
    "rate_limited",
    "payload_too_large",
    "method_not_allowed",
    "unavailable",
    "internal",
    "step_up_required",
    "held_for_review",
    "risk_denied",
    "idempotency_key_reused",
    "idempotency_in_progress",
];

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => "bad_request",
            ApiError::ValidationFailed(_) => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PasskeyRequired(_) => "passkey_required",
            ApiError::NotFound(_) => "not_found",
            ApiError::UsernameTaken => "username_taken",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::CeremonyNotFound => "ceremony_not_found",
            ApiError::WebauthnFailed(_) => "webauthn_failed",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::AccountLocked { .. }
            | ApiError::AccountDisabled
            | ApiError::FallbackLocked => "account_locked",
            ApiError::MfaRequired(_) => "mfa_required",
            ApiError::InvalidCode | ApiError::InvalidSetupCode => "invalid_code",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::StepUpRequired { .. } => "step_up_required",
            ApiError::HeldForReview { .. } => "held_for_review",
            ApiError::RiskDenied { .. } => "risk_denied",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyInProgress { .. } => "idempotency_in_progress",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "Bad request",
            ApiError::UnsupportedMediaType(_) => "Unsupported media type",
            ApiError::ValidationFailed(_) => "Validation failed",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::PasskeyRequired(_) => "Passkey sign-in required",
            ApiError::NotFound(_) => "Not found",
            ApiError::UsernameTaken => "Username taken",
            ApiError::InvalidCredentials => "Invalid credentials",
            ApiError::CeremonyNotFound => "Ceremony not found",
            ApiError::WebauthnFailed(_) => "WebAuthn verification failed",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::AccountLocked { .. }
            | ApiError::AccountDisabled
            | ApiError::FallbackLocked => "Account locked",
            ApiError::MfaRequired(_) => "Second factor required",
            ApiError::InvalidCode | ApiError::InvalidSetupCode => "Invalid code",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Unavailable => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
            ApiError::StepUpRequired { .. } => "Step-up required",
            ApiError::HeldForReview { .. } => "Held for review",
            ApiError::RiskDenied { .. } => "Refused by the risk rules",
            ApiError::IdempotencyKeyReused => "Idempotency key reused",
            ApiError::IdempotencyInProgress { .. } => "Request in progress",
        }
    }

    /// The body clients see. A 5xx gets a fixed detail: causes stay in the log.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let detail = if status.is_server_error() {
            match self {
                ApiError::Unavailable => "the service is temporarily unavailable; retry shortly",
                _ => "an internal error occurred; quote the request_id when reporting it",
            }
            .to_owned()
        } else {
            self.to_string()
        };
        Problem {
            type_: format!("https://passgate.dev/problems/{}", self.code().replace('_', "-")),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail,
            code: self.code().to_owned(),
            request_id: current_request_id(),
            needs: None,
            review_id: None,
            review_token: None,
            reasons: None,
        }
        .with_members(self)
    }

    /// The answer with this body: status, problem+json, and the headers
    /// the error calls for.
    fn respond(&self, problem: &Problem) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        match self {
            ApiError::Unauthorized | ApiError::InvalidCredentials => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            ApiError::RateLimited { retry_after_secs }
            | ApiError::AccountLocked { retry_after_secs }
            | ApiError::IdempotencyInProgress { retry_after_secs } => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            _ => {}
        }
        // Serialised by hand: `.json()` would replace the problem+json type.
        response.body(serde_json::to_string(problem).unwrap_or_default())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::ValidationFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized | ApiError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::PasskeyRequired(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::CeremonyNotFound => StatusCode::NOT_FOUND,
            ApiError::UsernameTaken => StatusCode::CONFLICT,
            ApiError::WebauthnFailed(_) => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AccountLocked { .. }
            | ApiError::AccountDisabled
            | ApiError::FallbackLocked
            | ApiError::MfaRequired(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidCode => StatusCode::UNAUTHORIZED,
            ApiError::InvalidSetupCode => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            ApiError::HeldForReview { .. } | ApiError::RiskDenied { .. } => StatusCode::FORBIDDEN,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyInProgress { .. } => StatusCode::CONFLICT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            // Logged here with its whole cause chain; the body stays fixed.
            tracing::error!(error.cause_chain = ?self, code = self.code(), "request failed");
        }
        self.respond(&self.problem())
    }
}

impl Problem {
    /// The extension members of the errors that carry them.
    fn with_members(mut self, error: &ApiError) -> Problem {
        match error {
            ApiError::StepUpRequired { needs, reasons } => {
                self.needs = Some((*needs).to_owned());
                self.reasons = Some(reasons.clone());
            }
            ApiError::HeldForReview { review_id, review_token, reasons } => {
                self.review_id = Some(review_id.clone());
                self.review_token = Some(review_token.0.clone());
                self.reasons = Some(reasons.clone());
            }
            ApiError::RiskDenied { reasons } => self.reasons = Some(reasons.clone()),
            _ => {}
        }
        self
    }
}

/// A request that outlived `server.request_timeout`: the error of the
/// deadline (startup.rs). actix answers an error from the middleware after
/// the request's own scope has ended, so this one brings the request id
/// along, and puts it in the body and the header as every answer has it.
#[derive(Debug, thiserror::Error)]
#[error("the request timed out")]
pub struct TimedOut {
    pub request_id: Option<String>,
}

impl ResponseError for TimedOut {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        let mut problem = ApiError::Unavailable.problem();
        problem.request_id = self.request_id.clone();
        let mut response = ApiError::Unavailable.respond(&problem);
        if let Some(id) = self.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
            response.headers_mut().insert(header::HeaderName::from_static(REQUEST_ID_HEADER), id);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant. The match below has no wildcard, so a new
    /// variant does not compile until it is added here too.
    fn one_of_each() -> Vec<ApiError> {
        let all = vec![
            ApiError::BadRequest(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::ValidationFailed(String::new()),
            ApiError::Unauthorized,
            ApiError::Forbidden(String::new()),
            ApiError::PasskeyRequired(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::UsernameTaken,
            ApiError::InvalidCredentials,
            ApiError::CeremonyNotFound,
            ApiError::WebauthnFailed(String::new()),
            ApiError::RateLimited { retry_after_secs: 1 },
            ApiError::AccountLocked { retry_after_secs: 1 },
            ApiError::AccountDisabled,
            ApiError::FallbackLocked,
            ApiError::MfaRequired(String::new()),
            ApiError::InvalidCode,
            ApiError::InvalidSetupCode,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::MethodNotAllowed,
            ApiError::Unavailable,
            ApiError::Internal(anyhow::anyhow!("cause")),
            ApiError::StepUpRequired { needs: "passkey", reasons: serde_json::json!([]) },
            ApiError::HeldForReview {
                review_id: String::new(),
                review_token: ReviewToken(String::new()),
                reasons: serde_json::json!([]),
            },
            ApiError::RiskDenied { reasons: serde_json::json!([]) },
            ApiError::IdempotencyKeyReused,
            ApiError::IdempotencyInProgress { retry_after_secs: 1 },
        ];
        for error in &all {
            match error {
                ApiError::BadRequest(_)
                | ApiError::UnsupportedMediaType(_)
                | ApiError::ValidationFailed(_)
                | ApiError::Unauthorized
                | ApiError::Forbidden(_)
                | ApiError::PasskeyRequired(_)
                | ApiError::NotFound(_)
                | ApiError::UsernameTaken
                | ApiError::InvalidCredentials
                | ApiError::CeremonyNotFound
                | ApiError::WebauthnFailed(_)
                | ApiError::RateLimited { .. }
                | ApiError::AccountLocked { .. }
                | ApiError::AccountDisabled
                | ApiError::FallbackLocked
                | ApiError::MfaRequired(_)
                | ApiError::InvalidCode
                | ApiError::InvalidSetupCode
                | ApiError::PayloadTooLarge { .. }
                | ApiError::MethodNotAllowed
                | ApiError::Unavailable
                | ApiError::Internal(_)
                | ApiError::StepUpRequired { .. }
                | ApiError::HeldForReview { .. }
                | ApiError::RiskDenied { .. }
                | ApiError::IdempotencyKeyReused
                | ApiError::IdempotencyInProgress { .. } => {}
            }
        }
        all
    }

    #[test]
    fn the_published_codes_are_exactly_the_codes_errors_carry() {
        let used: std::collections::BTreeSet<&str> =
            one_of_each().iter().map(|e| e.code()).collect();
        let published: std::collections::BTreeSet<&str> = CODES.iter().copied().collect();
        assert_eq!(used, published);
        assert_eq!(published.len(), CODES.len(), "a code is listed twice");
    }
}
