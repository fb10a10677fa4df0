//! Logging and request ids. Every request gets one id, echoed in the
//! `x-request-id` header, recorded on its root span and copied into any
//! problem body, so a user's error report leads straight to its log lines.

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;
use crate::context::{self, ClientInfo, RequestId};
use crate::net::TrustedProxies;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(context::REQUEST_ID_HEADER);

const USER_AGENT_MAX: usize = 256;
const ACCEPT_LANGUAGE_MAX: usize = 512;
/// A trusted browser's token is 43 characters; anything longer is not one.
const TRUSTED_DEVICE_MAX: usize = 64;

/// The client's IP and user agent, as the audit trail records them, and
/// the languages it accepts, for mails. The IP is the TCP peer's, or, when
/// that peer is one of our proxies, the one X-Forwarded-For names past
/// them (see `net::TrustedProxies`).
pub fn client_info(
    headers: &actix_web::http::header::HeaderMap,
    peer: Option<std::net::SocketAddr>,
    trusted_proxies: &TrustedProxies,
) -> ClientInfo {
    let ip = peer.map(|peer| {
        let forwarded = headers.get_all("x-forwarded-for").map(HeaderValue::as_bytes);
        trusted_proxies.client_ip(peer.ip(), forwarded).to_string()
    });
    let user_agent = headers
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(USER_AGENT_MAX).collect());
    let accept_language = headers
        .get(actix_web::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(|tags| tags.chars().take(ACCEPT_LANGUAGE_MAX).collect());
    let trusted_device = trusted_device_cookie(headers);
    ClientInfo { ip, user_agent, accept_language, trusted_device }
}

/// The value of the trusted-browser cookie, if the request has one that
/// could be a token (base64url, short): the service checks it against its
/// records. The cookie may come in several Cookie headers (HTTP/2).
fn trusted_device_cookie(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    headers
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == context::TRUSTED_DEVICE_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| {
            !value.is_empty()
                && value.len() <= TRUSTED_DEVICE_MAX
                && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
        .map(str::to_owned)
}

/// Installs the global subscriber. Safe to call twice (tests): the second
/// call is a no-op. The server logs to stdout; the CLI commands log to
/// stderr, so that their stdout is only their answer.
pub fn init(level: &str, format: LogFormat, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) }
    };
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer().json().with_current_span(true).with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => {
            registry.with(tracing_subscriber::fmt::layer().with_writer(writer)).try_init()
        }
    };
}

/// A proxy-supplied id is kept only when it is short and plain, so a client
/// cannot smuggle log-forging text through it.
fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let plain = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| text.to_owned())
}

/// Middleware body (used with `wrap_fn`): assigns the id, runs the rest of
/// the chain inside its task-local scope, and echoes it on the response.
pub fn with_request_id<S, B>(
    request: ServiceRequest,
    service: &S,
    trust_incoming: bool,
    trusted_proxies: &TrustedProxies,
) -> impl Future<Output = Result<ServiceResponse<B>, Error>> + use<S, B>
where
    S: actix_web::dev::Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
{
    let incoming = trust_incoming
        .then(|| request.headers().get(&REQUEST_ID_HEADER).and_then(acceptable_request_id))
        .flatten();
    let id = incoming.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let client = client_info(request.headers(), request.peer_addr(), trusted_proxies);
    let future = service.call(request);
    let scope_id = RequestId(id.clone());
    context::scope(scope_id, client, async move {
        let mut response = future.await?;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        Ok(response)
    })
}

/// Root span per request, carrying our request id (not tracing-actix-web's
/// own) and a `user_id` field that handlers fill in once it is known.
pub struct PassgateRootSpan;

impl RootSpanBuilder for PassgateRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id =
            request.extensions().get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
        tracing::info_span!(
            "http",
            method = %request.method(),
            route = %request.match_pattern().unwrap_or_else(|| "unmatched".into()),
            request_id = %request_id,
            status = tracing::field::Empty,
            user_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        // An error here is the request deadline's (startup.rs), which
        // actix answers further out.
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("status", status.as_u16());
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{COOKIE, HeaderMap};

    use super::*;

    fn client_with(cookies: &[&str]) -> ClientInfo {
        let mut headers = HeaderMap::new();
        for line in cookies {
            headers.append(COOKIE, HeaderValue::from_str(line).unwrap());
        }
        client_info(&headers, None, &TrustedProxies::default())
    }

    const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn the_trusted_browser_cookie_is_read_from_any_cookie_header() {
        let one = format!("theme=dark; __Host-passgate-trusted={TOKEN}; other=1");
        assert_eq!(client_with(&[&one]).trusted_device.as_deref(), Some(TOKEN));
        let split = format!("__Host-passgate-trusted={TOKEN}");
        assert_eq!(client_with(&["theme=dark", &split]).trusted_device.as_deref(), Some(TOKEN));
        assert_eq!(client_with(&["theme=dark"]).trusted_device, None);
        // A cookie of another name that ends the same is not it.
        let other = format!("x__Host-passgate-trusted={TOKEN}");
        assert_eq!(client_with(&[&other]).trusted_device, None);
        // Not of a token's shape: dropped here, never carried further.
        for bad in [
            "__Host-passgate-trusted=",
            "__Host-passgate-trusted=a b",
            "__Host-passgate-trusted=%0A",
        ] {
            assert_eq!(client_with(&[bad]).trusted_device, None, "{bad}");
        }
        let long = format!("__Host-passgate-trusted={}", "a".repeat(65));
        assert_eq!(client_with(&[&long]).trusted_device, None);
    }

    #[test]
    fn a_client_prints_without_its_trusted_browser_token() {
        let line = format!("__Host-passgate-trusted={TOKEN}");
        let printed = format!("{:?}", client_with(&[&line]));
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
