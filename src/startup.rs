//! Builds the HTTP server from settings: store, services, middleware and
//! routes, on one listener or, with `server.admin_bind`, two. Tests call
//! the same `Application::build_with` on port 0.

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
use crate::error::{ApiError, TimedOut};
use crate::net::TrustedProxies;
use crate::routes::security_headers::{SecurityHeaders, with_security_headers};
use crate::routes::{self, cors, extract};
use crate::service::{Core, housekeeping};
use crate::store::{self, Store};
use crate::telemetry::{PassgateRootSpan, with_request_id};

pub struct Application {
    port: u16,
    server: Server,
    /// The operators' listener (`server.admin_bind`) and its port.
    admin: Option<(u16, Server)>,
    core: web::Data<Core>,
}

/// Which routes a listener serves: with `server.admin_bind` set, /metrics
/// and /v1/admin/... move to the operators' listener, so that they can be
/// kept off the network the users reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    Everything,
    Public,
    Operators,
}

impl Surface {
    /// By the route pattern the router matched (not the raw path, which a
    /// percent-encoded letter would disguise); None is no route at all.
    fn serves(self, pattern: Option<&str>) -> bool {
        let operators = pattern.is_some_and(|p| p == "/metrics" || p.starts_with("/v1/admin/"));
        match self {
            Surface::Everything => true,
            Surface::Public => !operators,
            Surface::Operators => operators,
        }
    }
}

/// What every listener's app is made of; one Core for all.
#[derive(Clone)]
struct AppParts {
    core: web::Data<Core>,
    request_timeout: Duration,
    security_headers: SecurityHeaders,
    trust_request_id: bool,
    trusted_proxies: TrustedProxies,
    static_dir: std::path::PathBuf,
    cors_origins: Vec<String>,
}

impl Application {
    /// Binds the configured address and connects the configured database.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("server.bind: cannot listen on {}", settings.server.bind))?;
        let store = store::connect(&settings.database).await?;
        Self::build_with(settings, listener, store, Arc::new(SystemClock)).await
    }

    /// Builds on a listener, store and clock the caller made; binds
    /// `server.admin_bind` itself when it is set (port 0 in tests).
    pub async fn build_with(
        settings: Settings,
        listener: TcpListener,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        let port = listener.local_addr()?.port();
        let admin_listener = match settings.server.admin_bind {
            Some(address) => Some(
                TcpListener::bind(address)
                    .with_context(|| format!("server.admin_bind: cannot listen on {address}"))?,
            ),
            None => None,
        };
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
        let parts = AppParts {
            core: core.clone(),
            request_timeout,
            security_headers,
            trust_request_id,
            trusted_proxies,
            static_dir,
            cors_origins,
        };
        let (surface, admin) = match admin_listener {
            Some(admin_listener) => {
                let admin_port = admin_listener.local_addr()?.port();
                // Prometheus and a few operators: one worker is plenty.
                let admin = serve(parts.clone(), Surface::Operators, admin_listener, 1)?;
                tracing::info!(
                    port = admin_port,
                    "/metrics and /v1/admin are served on server.admin_bind only"
                );
                (Surface::Public, Some((admin_port, admin)))
            }
            None => (Surface::Everything, None),
        };
        let server = serve(parts, surface, listener, workers)?;
        spawn_housekeeping(core.clone());
        spawn_failure_flush(core.clone());
        spawn_rules_reload(core.clone());
        Ok(Application { port, server, admin, core })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `server.admin_bind`'s listener, when it is set.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(port, _)| *port)
    }

    pub fn core(&self) -> web::Data<Core> {
        self.core.clone()
    }

    /// Runs until a signal stops the listeners, or one of them fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let stopped = match self.admin {
            Some((_, admin)) => tokio::try_join!(self.server, admin).map(|_| ()),
            None => self.server.await,
        };
        // The failures counted since the last flush still count.
        if let Err(error) = self.core.anomalies.flush_now().await {
            tracing::warn!(error.cause_chain = ?error, "failure counts not written at shutdown");
        }
        stopped
    }
}

/// One listener's HTTP server: the same middleware (security headers,
/// request id, tracing, metrics, deadline) on every listener, over the
/// routes of its surface; the demo pages only where users are served.
fn serve(
    parts: AppParts,
    surface: Surface,
    listener: TcpListener,
    workers: usize,
) -> anyhow::Result<Server> {
    let mut server = HttpServer::new(move || {
        let AppParts {
            core,
            request_timeout,
            security_headers,
            trust_request_id,
            trusted_proxies,
            static_dir,
            cors_origins,
        } = parts.clone();
        let app = App::new()
            .app_data(core)
            .app_data(extract::json_config())
            .app_data(extract::path_config())
            .app_data(extract::query_config())
            .app_data(web::PayloadConfig::new(extract::BODY_LIMIT))
            .wrap_fn(move |request, service| keep_to_surface(request, service, surface))
            .wrap_fn(move |request, service| with_deadline(request, service, request_timeout))
            // Inside the request id, metrics and security headers, so that
            // preflights get them too; outside the deadline, so that its
            // 503 is readable by the calling page.
            .wrap(cors::cors(&cors_origins))
            .wrap_fn(cors::tidy_cors)
            .wrap_fn(record_metrics)
            .wrap(TracingLogger::<PassgateRootSpan>::new())
            .wrap_fn(move |request, service| {
                with_request_id(request, service, trust_request_id, &trusted_proxies)
            })
            .wrap_fn(move |request, service| {
                with_security_headers(request, service, security_headers)
            })
            .configure(routes::configure);
        let app = if static_dir.is_dir() && surface != Surface::Operators {
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
    Ok(server.run())
}

/// The pattern of the route the router will pick. `match_pattern` looks
/// at the raw path, but the router at the percent-decoded one: by that,
/// `/v1/%61dmin/users` would be no route here and the admin route there.
fn route_pattern(request: &ServiceRequest) -> Option<String> {
    request.resource_map().match_pattern(request.match_info().as_str())
}

/// Answers the normal 404 for a route that another listener serves, as if
/// this one had no such route.
fn keep_to_surface<S>(
    request: ServiceRequest,
    service: &S,
    surface: Surface,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let call = if surface.serves(route_pattern(&request).as_deref()) {
        Ok(service.call(request))
    } else {
        Err(request)
    };
    async move {
        match call {
            Ok(response) => response.await,
            Err(request) => {
                Ok(request.error_response(ApiError::NotFound("no such endpoint".into())))
            }
        }
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
    let route = match route_pattern(&request) {
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

/// Writes each node's failure counts every `anomaly.flush_interval_seconds`
/// (sooner when many keys wait), which also raises the anomaly alerts.
fn spawn_failure_flush(core: web::Data<Core>) {
    let interval = core.settings.anomaly.flush_interval;
    tokio::spawn(async move {
        let first = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(first, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = core.anomalies.flush_wanted() => {}
            }
            if let Err(error) = core.anomalies.flush_now().await {
                tracing::warn!(error.cause_chain = ?error, "failure counts not written; kept for the next flush");
            }
        }
    });
}

/// On SIGHUP, reads the risk rules file again (`risk.rules_file`): good
/// rules replace the ones in force; a bad file is logged, and the rules
/// in force stay.
fn spawn_rules_reload(core: web::Data<Core>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "SIGHUP cannot be caught: the risk rules reload only at start");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Logged either way by `reload`.
            let _ = core.risk.reload();
        }
    });
}
