//! API contract, "Payment step-up".

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;
use webauthn_rs::prelude::PublicKeyCredential;

use super::extract::{Bearer, Body};
use super::idempotency::Idempotent;
use super::schemas::{AssertionStarted, AuthenticationResponseJson, TransactionJson};
use crate::domain::{CeremonyId, Transaction};
use crate::error::{Problem, Result};
use crate::service::Core;
use crate::service::idempotency::Caller;
use crate::service::passkey::CeremonyStarted;
use crate::service::stepup::Authorization;

#[derive(Deserialize, ToSchema)]
pub struct StepupStartBody {
    /// `{"amount": "12.50", "currency": "EUR", "payee": "...", "reference"?}`
    #[schema(value_type = TransactionJson)]
    transaction: Transaction,
}

#[derive(Deserialize, ToSchema)]
pub struct StepupFinishBody {
    #[schema(value_type = String)]
    ceremony_id: CeremonyId,
    /// `PublicKeyCredential.toJSON()` of the assertion.
    #[schema(value_type = AuthenticationResponseJson)]
    credential: PublicKeyCredential,
    /// Optional: the transaction the client showed the user; refused when
    /// it differs from the one the ceremony was started for.
    #[schema(value_type = Option<TransactionJson>)]
    transaction: Option<Transaction>,
}

#[utoipa::path(post, path = "/v1/stepup/start", tag = "stepup",
    security(("bearer" = [])),
    request_body = StepupStartBody,
    responses(
        (status = 200, description = "the challenge is 16 random bytes followed by the SHA-256 of the canonical transaction", body = AssertionStarted),
        (status = 401, description = "unauthorized", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "forbidden: no passkey that may approve payments", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stepup_start(
    core: web::Data<Core>,
    bearer: Bearer,
    body: Body<StepupStartBody>,
) -> Result<web::Json<CeremonyStarted>> {
    Ok(web::Json(core.stepup.stepup_start(&bearer.0, body.into_inner().transaction).await?))
}

#[utoipa::path(post, path = "/v1/stepup/finish", tag = "stepup",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "optional, 1 to 255 printable ASCII characters (a UUID): a retry with the same key and request gets the first answer (the same token), marked `Idempotent-Replayed: true`, for as long as the token lives")),
    request_body = StepupFinishBody,
    responses(
        (status = 200, body = Authorization),
        (status = 400, description = "bad_request: a malformed Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "unauthorized (no bearer), invalid_credentials (the assertion or transaction does not match), or step_up_required (with needs and reasons: the risk rules want a user-verified assertion)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "held_for_review (with review_id, review_token and reasons: the risk rules held it for an admin; see /review.html) or risk_denied (with reasons)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ceremony_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_in_progress: the first request with this Idempotency-Key is still running (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed; idempotency_key_reused: this Idempotency-Key came with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn stepup_finish(
    core: web::Data<Core>,
    bearer: Bearer,
    body: Body<StepupFinishBody>,
    idempotent: Idempotent,
) -> Result<HttpResponse> {
    let body = body.into_inner();
    let caller = Caller::payer(&bearer.0);
    let work = async move {
        let authorization = core
            .stepup
            .stepup_finish(&bearer.0, &body.ceremony_id, &body.credential, body.transaction)
            .await?;
        Ok(web::Json(authorization))
    };
    idempotent.run(caller, work).await
}
