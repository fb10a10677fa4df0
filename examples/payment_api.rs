//! A tiny payment service: the downstream half of payment step-up.
//!
//! passgate's step-up hands the user's client a payment authorization token
//! bound to one transaction. This service is where that token is spent: it
//! executes a payment only if `passgate_verifier::Verifier` accepts the
//! token for exactly the transaction in the request, and answers every
//! refusal as problem+json with a code the client can act on. It keeps no
//! accounts and moves no money; it exists to show (and test) how a real
//! payment service uses the verifier, and to be the other end of the demo
//! pay page (`static/pay.html`), whose origin it allows by CORS.
//!
//!   cargo run --example payment_api -- [--passgate http://localhost:8080]
//!       [--bind 127.0.0.1:8090] [--issuer http://localhost:8080]
//!       [--audience payments:authorize] [--allowed-origin http://localhost:8080]
//!
//! Each flag can also come from the environment: PAYMENT_API_PASSGATE,
//! PAYMENT_API_BIND, PAYMENT_API_ISSUER, PAYMENT_API_AUDIENCE,
//! PAYMENT_API_ALLOWED_ORIGIN (a flag wins). The keys are fetched from
//! `<passgate>/.well-known/jwks.json`; the issuer must equal passgate's
//! `tokens.issuer` and the audience its `stepup.audience`. What the
//! verifier checks (README, "What a payment service must check"): the
//! signature by a published key, `typ` `payment-authz+jwt`, `iss`, `aud`,
//! `exp`/`nbf`, `scope` `payment:authorize`, `txn` against the request's
//! transaction, and `jti` once.
//!
//! `POST /payments` `{"transaction": {"amount", "currency", "payee",
//! "reference"?}, "authorization_token"}` answers 200 `{"accepted": true,
//! "payment_id", "sub", "txn", "transaction"}`, or 401 `invalid_token` /
//! `replayed`, 403 `insufficient_scope` / `transaction_mismatch`, 400/413/
//! 415/422 for a bad body, 503 `unavailable` when passgate's keys cannot be
//! fetched.

use std::net::TcpListener;

use actix_web::dev::{Server, Service};
use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, bail};
use passgate_verifier::{Transaction, Verifier, VerifyError};
use serde::Deserialize;
use serde_json::json;

/// passgate's default `tokens.issuer`, and where it serves by default.
const PASSGATE_DEFAULT: &str = "http://localhost:8080";
/// A payment request is a few hundred bytes; the token is the bulk of it.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Where passgate is, what its tokens must say, and who may call us.
#[derive(Clone, Debug)]
pub struct Options {
    /// passgate's base URL; the JWKS is at `/.well-known/jwks.json` below it.
    pub passgate_url: String,
    pub bind: String,
    /// passgate's `tokens.issuer`.
    pub issuer: String,
    pub audience: String,
    /// The origin of the page allowed to call us from a browser (CORS).
    pub allowed_origin: String,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            passgate_url: PASSGATE_DEFAULT.into(),
            bind: "127.0.0.1:8090".into(),
            issuer: PASSGATE_DEFAULT.into(),
            audience: "payments:authorize".into(),
            allowed_origin: PASSGATE_DEFAULT.into(),
            workers: 0,
        }
    }
}

impl Options {
    /// Defaults, then the environment, then the command line.
    #[allow(dead_code)] // unused where a test includes this file
    pub fn from_env_and_args() -> anyhow::Result<Options> {
        let mut options = Options::default();
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        for (name, field) in [
            ("PAYMENT_API_PASSGATE", &mut options.passgate_url),
            ("PAYMENT_API_BIND", &mut options.bind),
            ("PAYMENT_API_ISSUER", &mut options.issuer),
            ("PAYMENT_API_AUDIENCE", &mut options.audience),
            ("PAYMENT_API_ALLOWED_ORIGIN", &mut options.allowed_origin),
        ] {
            if let Some(value) = env(name) {
                *field = value;
            }
        }
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let field = match flag.as_str() {
                "--passgate" => &mut options.passgate_url,
                "--bind" => &mut options.bind,
                "--issuer" => &mut options.issuer,
                "--audience" => &mut options.audience,
                "--allowed-origin" => &mut options.allowed_origin,
                "-h" | "--help" => {
                    println!(
                        "usage: payment_api [--passgate URL] [--bind ADDR] [--issuer ISS] \
                         [--audience AUD] [--allowed-origin ORIGIN]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}; see --help"),
            };
            *field = args.next().with_context(|| format!("{flag} needs a value"))?;
        }
        Ok(options)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.passgate_url.trim_end_matches('/'))
    }
}

/// What every worker shares: one verifier, so one key cache and, above
/// all, one replay cache for the whole process.
pub struct PaymentApi {
    verifier: Verifier,
    allowed_origin: HeaderValue,
}

impl PaymentApi {
    pub fn new(options: &Options) -> anyhow::Result<PaymentApi> {
        let verifier = Verifier::new(&options.jwks_url(), &options.issuer, &options.audience)?;
        let allowed_origin = HeaderValue::from_str(options.allowed_origin.trim_end_matches('/'))
            .context("--allowed-origin is not a valid header value")?;
        Ok(PaymentApi { verifier, allowed_origin })
    }
}

/// Starts the service on `listener`; the returned server runs when polled
/// (spawn it, or await it).
pub fn serve(listener: TcpListener, options: &Options) -> anyhow::Result<Server> {
    let state = web::Data::new(PaymentApi::new(options)?);
    let mut server = HttpServer::new(move || App::new().configure(app_config(state.clone())))
        .listen(listener)?;
    if options.workers > 0 {
        server = server.workers(options.workers);
    }
    Ok(server.run())
}

/// The routes, for `App::configure`.
pub fn app_config(state: web::Data<PaymentApi>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |config| {
        let allowed_origin = state.allowed_origin.clone();
        config.app_data(state).app_data(json_config()).service(
            web::resource("/payments")
                .wrap_fn(move |request, service| {
                    let allowed = request.headers().get(header::ORIGIN) == Some(&allowed_origin);
                    let origin = allowed_origin.clone();
                    let response = service.call(request);
                    async move {
                        let mut response = response.await?;
                        let headers = response.headers_mut();
                        if allowed {
                            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                        }
                        // Answers differ by Origin, so caches must key on it.
                        headers.append(header::VARY, HeaderValue::from_static("Origin"));
                        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        Ok(response)
                    }
                })
                .route(web::post().to(pay))
                .route(web::method(Method::OPTIONS).to(preflight)),
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentRequest {
    transaction: Transaction,
    authorization_token: String,
}

async fn pay(api: web::Data<PaymentApi>, body: web::Json<PaymentRequest>) -> HttpResponse {
    let PaymentRequest { transaction, authorization_token } = body.into_inner();
    match api.verifier.verify_payment(&authorization_token, &transaction).await {
        Ok(authorization) => {
            let payment_id = uuid::Uuid::now_v7().to_string();
            // The jti goes in the record so a disputed payment can be traced
            // to its step-up in passgate's logs; the token itself never.
            tracing::info!(
                target: "audit", event = "payment_accepted", %payment_id,
                sub = %authorization.sub, jti = %authorization.jti, txn = %authorization.txn
            );
            HttpResponse::Ok().json(json!({
                "accepted": true,
                "payment_id": payment_id,
                "sub": authorization.sub,
                "txn": authorization.txn,
                "transaction": transaction,
            }))
        }
        Err(error) => {
            tracing::info!(target: "audit", event = "payment_refused", %error);
            refused(&error)
        }
    }
}

fn refused(error: &VerifyError) -> HttpResponse {
    use VerifyError as E;
    let (status, code) = match error {
        E::Malformed
        | E::UnsupportedAlgorithm(_)
        | E::MissingKeyId
        | E::UnknownKey
        | E::AlgorithmMismatch
        | E::BadSignature
        // Not an authorization at all (an access token, say).
        | E::WrongType(_)
        | E::MissingClaim(_)
        | E::WrongIssuer
        | E::WrongAudience
        | E::Expired
        | E::NotYetValid
        | E::LifetimeTooLong => (StatusCode::UNAUTHORIZED, "invalid_token"),
        // Genuine, but spent: the client needs a new step-up, like for an
        // expired one, and the code tells it the payment may already exist.
        E::Replayed => (StatusCode::UNAUTHORIZED, "replayed"),
        // Genuine and unspent, but it does not grant this payment.
        E::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
        E::TransactionMismatch => (StatusCode::FORBIDDEN, "transaction_mismatch"),
        E::KeysUnavailable(_) => {
            // The cause names internal hosts: it goes to our log only.
            tracing::warn!(%error, "cannot verify payments");
            let detail = "the signing keys cannot be fetched right now; try again shortly";
            return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        }
    };
    problem(status, code, &error.to_string())
}

/// CORS preflight: only the configured page origin, only POST with JSON.
async fn preflight(request: HttpRequest, api: web::Data<PaymentApi>) -> HttpResponse {
    let headers = request.headers();
    let origin_ok = headers.get(header::ORIGIN) == Some(&api.allowed_origin);
    let method_ok =
        headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).is_some_and(|m| m.as_bytes() == b"POST");
    if !(origin_ok && method_ok) {
        return problem(
            StatusCode::FORBIDDEN,
            "cors_refused",
            "only POST from the configured page origin is allowed",
        );
    }
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish()
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|error, _request| {
        let (status, code, detail) = match &error {
            JsonPayloadError::ContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_request",
                "the body must be application/json".to_owned(),
            ),
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            ),
            // serde names the field and the rule (the transaction's own
            // validation included). It may quote a misplaced string, but
            // only back to whoever sent it: nothing here logs the detail.
            JsonPayloadError::Deserialize(e) if e.is_data() => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", e.to_string())
            }
            _ => (StatusCode::BAD_REQUEST, "bad_request", "the body is not valid JSON".to_owned()),
        };
        InternalError::from_response(error, problem(status, code, &detail)).into()
    })
}

/// RFC 9457 problem+json, in passgate's shape.
fn problem(status: StatusCode, code: &str, detail: &str) -> HttpResponse {
    let body = json!({
        "type": format!("https://passgate.dev/problems/{}", code.replace('_', "-")),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    HttpResponse::build(status).content_type("application/problem+json").body(body.to_string())
}

#[allow(dead_code)] // unused where a test includes this file
#[tokio::main]
async fn main() -> std::process::ExitCode {
    passgate::telemetry::init("info", passgate::config::LogFormat::Pretty, false);
    let run = async {
        let options = Options::from_env_and_args()?;
        let listener = TcpListener::bind(&options.bind)
            .with_context(|| format!("cannot listen on {}", options.bind))?;
        let server = serve(listener, &options)?;
        tracing::info!(
            jwks = %options.jwks_url(), issuer = %options.issuer,
            allowed_origin = %options.allowed_origin,
            "payment API listening on http://{}/payments", options.bind
        );
        server.await.context("serving")
    };
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payment_api: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
