//! The [`Transport`] over HTTP: each sealed message is POSTed to the server's
//! binary sync endpoint (`/v1/sync/pull`, `/v1/sync/push` or `/v1/sync/ack`,
//! chosen by the message kind in the envelope) with a bearer token, and the
//! answer's bytes come back as they are.
//!
//! Two kinds of answer come back from the server:
//! - a sync message (`Content-Type: application/vnd.mobilesyncdb`), whatever the
//!   HTTP status: the envelope is self-describing (an error message carries its
//!   code), so the client decodes it like any in-process answer, and a
//!   refusal becomes [`ClientError::Refused`](crate::client::ClientError::Refused)
//!   exactly as with [`InProcess`](crate::client::InProcess);
//! - anything else, which the sync layer never produced: an
//!   `application/problem+json` document from the HTTP layer (401 bad token,
//!   403, 413 body too large, 429 rate limited, 5xx) or a proxy's page. It
//!   becomes [`TransportError::HttpStatus`] with the status, the problem's
//!   `code` and `detail`, and the `Retry-After` wait, so the client's retry
//!   logic can tell a lasting refusal (401, 403, 413) from a passing one (429,
//!   503) with [`TransportError::is_retryable`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderValue};

use crate::client::error::TransportError;
use crate::client::transport::Transport;

/// The media type of a sealed sync message, both ways.
const SYNC_CONTENT_TYPE: &str = "application/vnd.mobilesyncdb";

/// Byte of the envelope that holds the message kind (see `crate::sync::wire`).
const KIND_BYTE: usize = 5;
/// `MessageKind::PullRequest`, `PushRequest` and `AckRequest`.
const PULL_REQUEST: u8 = 1;
const PUSH_REQUEST: u8 = 3;
const ACK_REQUEST: u8 = 5;

/// At most this much of a non-sync answer is read: a problem document is a few
/// hundred bytes, and a misrouted request may hit a large page.
const MAX_ERROR_BODY: usize = 64 << 10;
/// At most this many characters of a non-problem body go into the error.
const MAX_DETAIL_CHARS: usize = 200;

/// The default bound on making a TCP (and TLS) connection. A mobile link that
/// cannot connect in this time is as good as offline; failing fast lets the
/// client's retry policy (or the app) decide, instead of waiting for the
/// operating system's own, much longer, timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time an idle pooled connection is kept. Sync requests come in
/// bursts (pull batch after batch, then push): keeping the connection saves a
/// TCP and TLS handshake per request within a sync and between close syncs.
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default interval of TCP keep-alive probes on pooled connections, so a
/// connection silently dropped by a NAT or carrier is noticed.
const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A [`Transport`] to a MobileSyncDB server over HTTP(S).
///
/// Cloning is cheap and clones share the connection pool and the token (so
/// [`HttpTransport::set_token`] on one is seen by all). It holds no request
/// timeout: the [`Client`](crate::client::Client) bounds each exchange with its
/// configured `request_timeout`, and a dropped exchange drops its request.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    shared: Arc<Shared>,
}

struct Shared {
    base: Url,
    pull: Url,
    push: Url,
    ack: Url,
    /// `Bearer <token>`, marked sensitive so it is never logged. A lock because
    /// tokens expire and a long-lived client swaps them in place.
    authorization: RwLock<HeaderValue>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        formatter
            .debug_struct("HttpTransport")
            .field("base_url", &self.shared.base.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to the server at `base_url` (`http://host:port` or
    /// `https://host/prefix`), authenticating with the bearer `token`, over a
    /// pooled client with the defaults of [`HttpTransportBuilder`].
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidEndpoint`] for a base URL that is not an
    /// absolute `http`/`https` URL, a token that cannot be a header value, or
    /// an HTTP client that cannot be built (no TLS backend).
    pub fn new(base_url: &str, token: &str) -> Result<HttpTransport, TransportError> {
        HttpTransport::builder(base_url, token).build()
    }

    /// A transport over an existing `reqwest::Client`: an app that already has
    /// one shares its pool, proxy and TLS settings. The client's own settings
    /// are used as they are.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidEndpoint`] as for [`HttpTransport::new`].
    pub fn with_client(
        base_url: &str,
        token: &str,
        client: reqwest::Client,
    ) -> Result<HttpTransport, TransportError> {
        HttpTransport::builder(base_url, token)
            .client(client)
            .build()
    }

    /// A builder, to change the connection settings.
    pub fn builder(base_url: &str, token: &str) -> HttpTransportBuilder {
        HttpTransportBuilder {
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: None,
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            user_agent: concat!("mobilesyncdb-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            client: None,
        }
    }

    /// The server's base URL, as given.
    pub fn base_url(&self) -> &Url {
        &self.shared.base
    }

    /// Uses `token` for the next requests (a refreshed token before the old one
    /// expires, or after a 401). Requests in flight keep the old one.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidEndpoint`] for a token that cannot be a header
    /// value; the old token stays.
    pub fn set_token(&self, token: &str) -> Result<(), TransportError> {
        let value = authorization(token)?;
        *self
            .shared
            .authorization
            .write()
            .unwrap_or_else(PoisonError::into_inner) = value;
        Ok(())
    }

    fn authorization(&self) -> HeaderValue {
        self.shared
            .authorization
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The endpoint of a request message, by its kind byte.
    fn endpoint(&self, request: &[u8]) -> Result<Url, TransportError> {
        match request.get(KIND_BYTE) {
            Some(&PULL_REQUEST) => {
                let mut url = self.shared.pull.clone();
                // A long poll names its wait in the query too: the server
                // gives the request that much time beyond its timeout.
                if let Some(wait_ms) = long_poll_wait(request) {
                    url.query_pairs_mut()
                        .append_pair("wait_ms", &wait_ms.to_string());
                }
                Ok(url)
            }
            Some(&PUSH_REQUEST) => Ok(self.shared.push.clone()),
            Some(&ACK_REQUEST) => Ok(self.shared.ack.clone()),
            kind => Err(TransportError::NotARequest {
                kind: kind.copied(),
            }),
        }
    }
}

impl Transport for HttpTransport {
    fn exchange(
        &self,
        request: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
        let endpoint = self.endpoint(&request);
        let client = self.client.clone();
        let authorization = self.authorization();
        async move {
            let response = client
                .post(endpoint?)
                .header(header::CONTENT_TYPE, SYNC_CONTENT_TYPE)
                .header(header::ACCEPT, SYNC_CONTENT_TYPE)
                .header(header::AUTHORIZATION, authorization)
                .body(request)
                .send()
                .await
                .map_err(send_error)?;
            let status = response.status().as_u16();
            let is_message = media_type(response.headers())
                .is_some_and(|kind| kind.eq_ignore_ascii_case(SYNC_CONTENT_TYPE));
            if is_message {
                // A sync message, even under an error status: the client checks
                // and decodes it (an error message carries the server's code).
                let body = response
                    .bytes()
                    .await
                    .map_err(|source| TransportError::Http { source })?;
                return Ok(Vec::from(body));
            }
            // Not a sync message: only now are the headers kept, for the error.
            let content_type = media_type(response.headers()).map(str::to_ascii_lowercase);
            let retry_after = retry_after(response.headers());
            let body = read_capped(response, MAX_ERROR_BODY).await?;
            Err(http_error(
                status,
                content_type.as_deref(),
                retry_after,
                &body,
            ))
        }
    }
}

/// The wait of a pull request that is a long poll.
fn long_poll_wait(request: &[u8]) -> Option<u64> {
    let opened = crate::sync::wire::open(request, usize::MAX).ok()?;
    let pull: crate::sync::PullRequest =
        crate::sync::wire::decode_body(&opened, opened.kind).ok()?;
    pull.wait_ms.filter(|wait| *wait > 0)
}

/// Builds an [`HttpTransport`]; from [`HttpTransport::builder`].
#[derive(Debug)]
#[must_use]
pub struct HttpTransportBuilder {
    base_url: String,
    token: String,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: Option<usize>,
    tcp_keepalive: Option<Duration>,
    user_agent: String,
    client: Option<reqwest::Client>,
}

impl HttpTransportBuilder {
    /// The bound on connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> HttpTransportBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// How long idle connections stay pooled (default 90 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> HttpTransportBuilder {
        self.pool_idle_timeout = timeout;
        self
    }

    /// At most this many idle connections to the server (default unbounded;
    /// a client runs one sync at a time, so it rarely holds more than one).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> HttpTransportBuilder {
        self.pool_max_idle_per_host = Some(max);
        self
    }

    /// TCP keep-alive on connections; `None` disables it (default 60 s).
    pub fn tcp_keepalive(mut self, interval: Option<Duration>) -> HttpTransportBuilder {
        self.tcp_keepalive = interval;
        self
    }

    /// The `User-Agent` (default `mobilesyncdb-client/<version>`).
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> HttpTransportBuilder {
        self.user_agent = user_agent.into();
        self
    }

    /// Uses this client as it is; the connection settings above are then
    /// ignored.
    pub fn client(mut self, client: reqwest::Client) -> HttpTransportBuilder {
        self.client = Some(client);
        self
    }

    /// The transport.
    ///
    /// # Errors
    ///
    /// [`TransportError::InvalidEndpoint`] as for [`HttpTransport::new`].
    pub fn build(self) -> Result<HttpTransport, TransportError> {
        let base = Url::parse(&self.base_url).map_err(|error| {
            invalid(format!(
                "the base URL `{}` does not parse: {error}",
                self.base_url
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid(format!(
                "the base URL `{base}` is not an http:// or https:// URL"
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid(format!(
                "the base URL `{base}` has a query or fragment; give only scheme, host, port and path"
            )));
        }
        let endpoint = |path: &str| {
            let url = format!("{}{path}", base.as_str().trim_end_matches('/'));
            Url::parse(&url).map_err(|error| invalid(format!("`{url}` does not parse: {error}")))
        };
        let (pull, push, ack) = (
            endpoint("/v1/sync/pull")?,
            endpoint("/v1/sync/push")?,
            endpoint("/v1/sync/ack")?,
        );
        let authorization = authorization(&self.token)?;
        let client = match self.client {
            Some(client) => client,
            None => {
                let mut builder = reqwest::Client::builder()
                    .connect_timeout(self.connect_timeout)
                    // Sync requests are small request/answer pairs: Nagle's
                    // algorithm would hold the last segment of a request back
                    // waiting for an ACK (delayed up to 40 ms or more by the
                    // peer), adding latency to every exchange for no gain.
                    .tcp_nodelay(true)
                    .pool_idle_timeout(self.pool_idle_timeout)
                    .tcp_keepalive(self.tcp_keepalive)
                    .user_agent(self.user_agent);
                if let Some(max) = self.pool_max_idle_per_host {
                    builder = builder.pool_max_idle_per_host(max);
                }
                builder
                    .build()
                    .map_err(|error| invalid(format!("the HTTP client cannot be built: {error}")))?
            }
        };
        Ok(HttpTransport {
            client,
            shared: Arc::new(Shared {
                base,
                pull,
                push,
                ack,
                authorization: RwLock::new(authorization),
            }),
        })
    }
}

fn invalid(problem: String) -> TransportError {
    TransportError::InvalidEndpoint { problem }
}

/// `Bearer <token>`, sensitive: hyper and reqwest never log or reuse it on a
/// redirect to another host.
fn authorization(token: &str) -> Result<HeaderValue, TransportError> {
    if token.is_empty() {
        return Err(invalid("the token is empty".to_owned()));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        invalid(
            "the token holds characters a header cannot carry (control characters or non-ASCII)"
                .to_owned(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A failure before any answer: a connection that could not be made is
/// [`TransportError::Connect`] (the request never left), any later break is
/// [`TransportError::Http`] (it may have been applied). Both are retryable.
fn send_error(source: reqwest::Error) -> TransportError {
    if source.is_connect() {
        TransportError::Connect { source }
    } else {
        TransportError::Http { source }
    }
}

/// The media type of the answer, without parameters.
fn media_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim())
}

/// The first `limit` bytes of the body; the rest is not read.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, TransportError> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response
            .chunk()
            .await
            .map_err(|source| TransportError::Http { source })?
        {
            Some(chunk) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            None => break,
        }
    }
    Ok(body)
}

/// The fields of a problem document the client uses.
#[derive(serde::Deserialize)]
struct ProblemFields {
    code: Option<String>,
    detail: Option<String>,
    title: Option<String>,
}

/// An answer that is not a sync message, as a [`TransportError::HttpStatus`].
fn http_error(
    status: u16,
    content_type: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> TransportError {
    let problem = content_type
        .filter(|kind| *kind == "application/problem+json" || *kind == "application/json")
        .and_then(|_| serde_json::from_slice::<ProblemFields>(body).ok());
    let (code, detail) = match problem {
        // A success in another format: the server ignored `Accept`, or this is
        // not a MobileSyncDB server.
        _ if (200..300).contains(&status) => (
            None,
            format!(
                "expected a `{SYNC_CONTENT_TYPE}` answer, got `{}`; is the base URL a MobileSyncDB server?",
                content_type.unwrap_or("no content type")
            ),
        ),
        Some(problem) => {
            let detail = problem
                .detail
                .or(problem.title)
                .unwrap_or_else(|| reason(status));
            (problem.code, detail)
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let detail = if text.is_empty() {
                reason(status)
            } else {
                let snippet: String = text.chars().take(MAX_DETAIL_CHARS).collect();
                format!("{}: {snippet}", reason(status))
            };
            (None, detail)
        }
    };
    TransportError::HttpStatus {
        status,
        code,
        detail,
        retry_after,
    }
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("HTTP error")
        .to_owned()
}

/// `Retry-After` in delay-seconds, the form the server sends. The HTTP-date
/// form is not read (no retry wait is then known, and the client backs off by
/// its own policy).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8) -> Vec<u8> {
        let mut bytes = vec![0; 16];
        bytes[KIND_BYTE] = kind;
        bytes
    }

    #[test]
    fn routes_by_kind_byte_under_the_base_path() {
        let transport = HttpTransport::new("https://sync.example.com/msdb/", "t").expect("valid");
        let route = |kind| transport.endpoint(&message(kind)).map(String::from);
        assert_eq!(
            route(1).expect("pull"),
            "https://sync.example.com/msdb/v1/sync/pull"
        );
        assert_eq!(
            route(3).expect("push"),
            "https://sync.example.com/msdb/v1/sync/push"
        );
        assert_eq!(
            route(5).expect("ack"),
            "https://sync.example.com/msdb/v1/sync/ack"
        );
        assert!(matches!(
            route(2),
            Err(TransportError::NotARequest { kind: Some(2) })
        ));
        assert!(matches!(
            transport.endpoint(&[0; 3]),
            Err(TransportError::NotARequest { kind: None })
        ));
    }

    #[test]
    fn a_long_poll_names_its_wait_in_the_query() {
        let transport = HttpTransport::new("https://sync.example.com/", "t").expect("valid");
        let pull = |wait_ms| crate::sync::PullRequest {
            device: "phone".to_owned(),
            wait_ms,
            ..crate::sync::PullRequest::default()
        };
        let url = |request: &crate::sync::PullRequest| {
            let message =
                crate::sync::encode_request(crate::sync::wire::MessageKind::PullRequest, request);
            String::from(transport.endpoint(&message).expect("a pull"))
        };
        assert_eq!(
            url(&pull(Some(60_000))),
            "https://sync.example.com/v1/sync/pull?wait_ms=60000"
        );
        assert_eq!(url(&pull(None)), "https://sync.example.com/v1/sync/pull");
    }

    #[test]
    fn refuses_bad_urls_and_tokens() {
        for url in ["not a url", "ftp://host", "http://host/?q=1", "mailto:a@b"] {
            assert!(
                matches!(
                    HttpTransport::new(url, "t"),
                    Err(TransportError::InvalidEndpoint { .. })
                ),
                "{url}"
            );
        }
        for token in ["", "line\nbreak"] {
            assert!(matches!(
                HttpTransport::new("http://127.0.0.1:1", token),
                Err(TransportError::InvalidEndpoint { .. })
            ));
        }
    }

    #[test]
    fn debug_hides_the_token() {
        let transport = HttpTransport::new("http://127.0.0.1:1", "secret-token").expect("valid");
        assert!(!format!("{transport:?}").contains("secret-token"));
    }

    #[test]
    fn problem_documents_become_status_errors() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        let body = br#"{"type":"https://mobilesyncdb.dev/problems/rate_limited","title":"Too Many Requests","status":429,"detail":"slow down","code":"rate_limited"}"#;
        let error = http_error(
            429,
            Some("application/problem+json"),
            retry_after(&headers),
            body,
        );
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(matches!(
            &error,
            TransportError::HttpStatus { status: 429, code: Some(code), detail, .. }
                if code == "rate_limited" && detail == "slow down"
        ));

        let error = http_error(413, Some("text/html"), None, b"<h1>too big</h1>");
        assert!(!error.is_retryable());
        assert!(matches!(
            &error,
            TransportError::HttpStatus { status: 413, code: None, detail, retry_after: None }
                if detail.contains("too big")
        ));
        let error = http_error(503, None, None, b"");
        assert!(error.is_retryable());
        let error = http_error(200, Some("application/json"), None, b"{}");
        assert!(!error.is_retryable());
    }
}
