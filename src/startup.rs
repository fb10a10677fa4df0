//! Builds the HTTP server from settings: store, services, middleware and
//! routes. Tests call the same `Application::build_with` on port 0.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tracing_actix_web::TracingLogger;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::context::current_request_id;
use crate::error::TimedOut;
use crate::routes::security_headers::{SecurityHeaders, with_security_headers};
use crate::routes::{self, cors, extract};
use crate::service::{Core, housekeeping};
use crate::store::{self, Store};
use crate::telemetry::{PassgateRootSpan, with_request_id};

pub struct Application {
    port: u16,
    server: Server,
    core: web::Data<Core>,
}

impl Application {
    /// Binds the configured address and connects the configured database.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("server.bind: cannot listen on {}", settings.server.bind))?;
        let store = store::connect(&settings.database).await?;
        Self::build_with(settings, listener, store, Arc::new(SystemClock)).await
    }

    /// Builds on a listener, store and clock the caller made.
    pub async fn build_with(
        settings: Settings,
        listener: TcpListener,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let workers = settings.server.workers;
        let static_dir = settings.server.static_dir.clone();
        let trust_request_id = settings.server.trust_request_id;
        let trusted_proxies = settings.server.trusted_proxies.clone();
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        let request_timeout = settings.server.request_timeout;
        let security_headers = SecurityHeaders::for_origins(&settings.webauthn.origins);
        let cors_origins = settings.server.cors_origins.clone();
        let core = web::Data::new(Core::new(settings, store, clock).await?);
        if !static_dir.is_dir() {
            tracing::warn!(path = %static_dir.display(), "server.static_dir is not a folder; the demo page is off");
        }
        let app_core = core.clone();
        let mut server = HttpServer::new(move || {
            let app = App::new()
                .app_data(app_core.clone())
                .app_data(extract::json_config())
                .app_data(extract::path_config())
                .app_data(extract::query_config())
                .app_data(web::PayloadConfig::new(extract::BODY_LIMIT))
                .wrap_fn(move |request, service| with_deadline(request, service, request_timeout))
                // Inside the request id, metrics and security headers, so
                // that preflights get them too; outside the deadline, so
                // that its 503 is readable by the calling page.
                .wrap(cors::cors(&cors_origins))
                .wrap_fn(cors::tidy_cors)
                .wrap_fn(record_metrics)
                .wrap(TracingLogger::<PassgateRootSpan>::new())
                .wrap_fn({
                    let trusted_proxies = trusted_proxies.clone();
                    move |request, service| {
                        with_request_id(request, service, trust_request_id, &trusted_proxies)
                    }
                })
                .wrap_fn(move |request, service| {
                    with_security_headers(request, service, security_headers)
                })
                .configure(routes::configure);
            let app = if static_dir.is_dir() {
                // The admin console's address (issue 4): /admin.
                app.route(
                    "/admin",
                    web::get().to(|| async {
                        actix_web::HttpResponse::Found()
                            .insert_header((actix_web::http::header::LOCATION, "/admin.html"))
                            .finish()
                    }),
                )
                .service(
                    actix_files::Files::new("/", &static_dir)
                        .index_file("index.html")
                        .default_handler(web::to(extract::not_found)),
                )
            } else {
                app
            };
            app.default_service(web::to(extract::not_found))
        })
        .listen(listener)?;
        if workers > 0 {
            server = server.workers(workers);
        }
        let server = server.run();
        spawn_housekeeping(core.clone());
        Ok(Application { port, server, core })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn core(&self) -> web::Data<Core> {
        self.core.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Counts and times every request by its route pattern (not its path, so
/// ids in paths do not multiply the series).
fn record_metrics<S>(
    request: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let core = request.app_data::<web::Data<Core>>().cloned();
    // The static-file service is mounted at "/" and so matches as "".
    let route = match request.match_pattern() {
        Some(pattern) if pattern.is_empty() => "static".to_owned(),
        Some(pattern) => pattern,
        None => "unmatched".to_owned(),
    };
    // Clients may send any method name; only known ones become labels.
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => known,
        _ => "OTHER",
    }
    .to_owned();
    let started = Instant::now();
    let response = service.call(request);
    async move {
        let response = response.await;
        // An error here is the deadline's, answered by actix further out.
        let status = match &response {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        if let Some(core) = core {
            let seconds = started.elapsed().as_secs_f64();
            core.metrics.observe_request(&route, &method, status.as_u16(), seconds);
        }
        response
    }
}

/// Answers 503 when a request outlives `server.request_timeout`. A
/// database connection cut without a reset (a network partition, a
/// firewall dropping state) would otherwise hold the caller until TCP gives
/// up, many minutes later, and the proxy's own timeout would answer in our
/// stead with no request_id. The request's work is dropped where it
/// stands, which the stores are written to survive. Every cancelled
/// request (past the deadline, or its client gone) first marks the
/// PostgreSQL connections to be settled before their next use: the one it
/// held may have a statement in flight, and goes back to the pool as the
/// work is dropped.
fn with_deadline<S>(
    request: ServiceRequest,
    service: &S,
    limit: Duration,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let response = service.call(request);
    async move {
        // Declared first, dropped last: after the guard has marked them.
        let mut response = std::pin::pin!(response);
        let mut cancelled = CancelGuard { armed: true };
        tokio::select! {
            response = &mut response => {
                cancelled.armed = false;
                response
            }
            () = tokio::time::sleep(limit) => {
                drop(cancelled);
                tracing::error!(limit_seconds = limit.as_secs(), "request timed out; answered 503");
                Err(TimedOut { request_id: current_request_id() }.into())
            }
        }
    }
}

/// Marks the PostgreSQL connections for settling when dropped armed: a
/// request dropped before it finished.
struct CancelGuard {
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            store::suspect_connections();
        }
    }
}

fn spawn_housekeeping(core: web::Data<Core>) {
    let interval = core.settings.housekeeping.interval;
    tokio::spawn(async move {
        // The first round comes one interval after start, not at once.
        let first = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(first, interval);
        loop {
            ticks.tick().await;
            core.housekeeping.round(housekeeping::ROUND_LIMIT).await;
        }
    });
}
