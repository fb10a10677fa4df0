//! What is known of the request being served, for any layer to read:
//! its id and its client. It depends on nothing else in the crate, so that
//! errors, services and telemetry can all use it without importing each
//! other (telemetry sets it; errors and the audit trail read it).

use std::future::Future;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The cookie that marks a trusted browser (issue 20 item 5): `__Host-`,
/// so only this origin, over HTTPS, with Path=/ may set it.
pub const TRUSTED_DEVICE_COOKIE: &str = "__Host-passgate-trusted";

/// What the server knows of the client making a request.
#[derive(Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The Accept-Language header as sent (cut short): which language the
    /// mails answering this request are written in.
    pub accept_language: Option<String>,
    /// The token of the `__Host-passgate-trusted` cookie, when the browser
    /// sent one of a token's shape: a bearer secret, never printed (see
    /// the Debug below) nor recorded.
    pub trusted_device: Option<String>,
}

/// By hand, so that no log line that prints a client shows its trusted
/// browser's token.
impl std::fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientInfo")
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("accept_language", &self.accept_language)
            .field("trusted_device", &self.trusted_device.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The id of one HTTP request: taken from a trusted proxy's header, or made here.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

tokio::task_local! {
    static REQUEST_ID: RequestId;
    static CLIENT: ClientInfo;
}

/// Runs `work` as the request `id` from `client`: what it and everything
/// it awaits reads through `current_request_id` and `current_client`.
pub fn scope<F: Future>(
    id: RequestId,
    client: ClientInfo,
    work: F,
) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, CLIENT.scope(client, work))
}

/// The client of the request being served on this task, if any.
pub fn current_client() -> ClientInfo {
    CLIENT.try_with(ClientInfo::clone).unwrap_or_default()
}

/// The id of the request being served on this task, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.0.clone()).ok()
}
