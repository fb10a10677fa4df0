//! Security headers on every response: the pages' Content-Security-Policy,
//! `nosniff`, no referrer, no framing, `no-store` on the API, and HSTS
//! when the site is served over https only. One middleware, outermost, so
//! that errors, 404s and the request deadline's 503 carry them as well as
//! the pages and API answers do.

use std::fmt;
use std::future::Future;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use url::Url;

/// The pages load their scripts, styles and images from this origin only,
/// with no inline script or style (`script-src 'self'` is what turns an
/// injected `<script>` or `onclick=` into nothing), and talk to the API on
/// this origin. `data:` images are the QR code of a TOTP enrolment and the
/// empty favicon. The policy rides on every response, not only on HTML:
/// an API answer opened as a document is held to it too.
macro_rules! page_policy {
    () => {
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    };
}
const PAGE_POLICY: &str = page_policy!();

/// The pay page hands the authorization token to the payment API, which
/// lives on another origin that the user may type in: any https origin,
/// or a local one for the demo (`cargo run --example payment_api`).
const PAY_PAGE_POLICY: &str =
    concat!(page_policy!(), "; connect-src 'self' https: http://localhost:* http://127.0.0.1:*");

/// Two years, the preload list's minimum, and every subdomain: passkeys
/// belong to the whole RP id, so its subdomains are served over https too.
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// What this node adds; decided once from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityHeaders {
    hsts: bool,
}

impl SecurityHeaders {
    /// HSTS only when every web origin (http or https; app origins aside)
    /// is https: sent to a browser on `http://localhost`, it would pin
    /// https on a host that has none.
    pub fn for_origins(origins: &[Url]) -> SecurityHeaders {
        let mut web = origins.iter().filter(|o| matches!(o.scheme(), "http" | "https")).peekable();
        let hsts = web.peek().is_some() && web.all(|o| o.scheme() == "https");
        SecurityHeaders { hsts }
    }

    fn apply(self, path: Path, headers: &mut HeaderMap) {
        let policy = if path == Path::PayPage { PAY_PAGE_POLICY } else { PAGE_POLICY };
        let fixed = [
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ];
        for (name, value) in fixed {
            headers.insert(name, HeaderValue::from_static(value));
        }
        // Every API answer may hold a token, a code, a secret or personal
        // data, its errors included; the public documents (jwks.json,
        // openapi.json) live outside /v1 and keep their own caching.
        if path == Path::Api {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if self.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
        }
    }
}

/// Middleware body (used with `wrap_fn`, outermost).
pub fn with_security_headers<S, B>(
    request: ServiceRequest,
    service: &S,
    headers: SecurityHeaders,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let path = Path::of(request.path());
    let response = service.call(request);
    async move {
        match response.await {
            Ok(mut response) => {
                headers.apply(path, response.headers_mut());
                Ok(response)
            }
            Err(error) => Err(WithHeaders { error, path, headers }.into()),
        }
    }
}

/// An error that reached the outermost middleware (the request deadline's
/// 503): actix turns it into the response only further out, past us, so
/// the headers are added when it does.
#[derive(Debug)]
struct WithHeaders {
    error: actix_web::Error,
    path: Path,
    headers: SecurityHeaders,
}

/// What the headers depend on in a request's path, decided before the
/// request is handed on (no copy of the path is kept meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Api,
    PayPage,
    Other,
}

impl Path {
    fn of(path: &str) -> Path {
        if path == "/v1" || path.starts_with("/v1/") {
            Path::Api
        } else if path == "/pay.html" {
            Path::PayPage
        } else {
            Path::Other
        }
    }
}

impl fmt::Display for WithHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for WithHeaders {
    fn status_code(&self) -> StatusCode {
        self.error.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        let mut response = self.error.error_response();
        self.headers.apply(self.path, response.headers_mut());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<Url> {
        list.iter().map(|o| Url::parse(o).unwrap()).collect()
    }

    #[test]
    fn hsts_only_when_every_web_origin_is_https() {
        let app = "android:apk-key-hash:U2lnbmluZ0NlcnQ";
        let https_only = SecurityHeaders::for_origins(&origins(&["https://wallet.example", app]));
        assert!(https_only.hsts);
        let mixed = origins(&["https://wallet.example", "http://localhost:8080"]);
        assert!(!SecurityHeaders::for_origins(&mixed).hsts);
        assert!(!SecurityHeaders::for_origins(&origins(&[app])).hsts, "no web origin at all");
    }

    #[test]
    fn the_page_policies_allow_no_inline_script_or_style() {
        for policy in [PAGE_POLICY, PAY_PAGE_POLICY] {
            assert!(!policy.contains("unsafe"), "{policy}");
            for directive in [
                "default-src 'self'",
                "script-src 'self'",
                "object-src 'none'",
                "base-uri 'none'",
                "frame-ancestors 'none'",
                "form-action 'self'",
            ] {
                assert!(policy.contains(directive), "{directive} in {policy}");
            }
        }
    }
}
