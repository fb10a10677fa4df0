//! What is known of the request being served, for any layer to read:
//! its id and its client. It depends on nothing else in the crate, so that
//! errors, services and telemetry can all use it without importing each
//! other (telemetry sets it; errors and the audit trail read it).

use std::future::Future;

/// The header that carries a request's id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the server knows of the client making a request.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The Accept-Language header as sent (cut short): which language the
    /// mails answering this request are written in.
    pub accept_language: Option<String>,
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
