//! Serving the routes: connections through hyper-util with a connection cap, a
//! header-read timeout and a keep-alive timeout (plain `warp::serve` has none),
//! and around every request: its id, rate limit, timeout, gzip, metrics, logs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_service::Service;
use tracing::{Instrument, debug, info, info_span, warn};
use warp::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use crate::api::problem::Problem;
use crate::api::routes;
use crate::api::state::AppState;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every answer.
pub(crate) type AnswerBody = BoxBody<Bytes, BoxError>;

/// JSON answers at least this large are gzipped when the client accepts it.
const GZIP_MIN_BYTES: usize = 860;

/// A streamed answer body (an export), handed from a route to the server
/// through the response's extensions: warp's own body type cannot wrap a stream.
#[derive(Clone, Debug)]
pub(crate) struct StreamedBody(Arc<Mutex<Option<Chunks>>>);

/// Where a streamed body's chunks come from.
pub(crate) type Chunks = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

impl StreamedBody {
    /// A 200 answer whose body is what `receiver` yields.
    pub(crate) fn response(receiver: Chunks) -> warp::reply::Response {
        let mut response = warp::reply::Response::new(Vec::new().into());
        response
            .extensions_mut()
            .insert(StreamedBody(Arc::new(Mutex::new(Some(receiver)))));
        response
    }

    /// The body; the connection counts as busy until it is sent or dropped, so
    /// a long export is not taken for an idle keep-alive connection.
    fn take(&self, activity: &Arc<Activity>) -> Option<AnswerBody> {
        let receiver = self.0.lock().ok()?.take()?;
        let busy = Busy::new(Arc::clone(activity));
        let stream =
            futures_util::stream::unfold((receiver, busy), |(mut receiver, busy)| async move {
                let item = receiver.recv().await?;
                Some((
                    item.map(Frame::data).map_err(BoxError::from),
                    (receiver, busy),
                ))
            });
        Some(BodyExt::boxed(StreamBody::new(stream)))
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    finished: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The address it listens on (the port chosen, when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting connections, lets requests in flight finish (up to
    /// `server.shutdown_grace`), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.finished.await;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.state.cluster() {
            cluster.stop();
        }
        self.state.webhooks().shutdown();
        if let Some(store) = self.state.store().cloned() {
            let closed = tokio::task::spawn_blocking(move || store.close()).await;
            if let Ok(Err(error)) = closed {
                tracing::error!(%error, "the journal could not be flushed at shutdown");
            }
        }
    }
}

/// Binds the listener and serves `state`'s routes until shut down.
///
/// # Errors
///
/// The listener could not bind.
pub async fn start(state: AppState) -> std::io::Result<ServerHandle> {
    let listener = TcpListener::bind(state.config().server.listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, signal) = watch::channel(false);
    let accepting = accept_loop(listener, state.clone(), signal);
    let finished = tokio::spawn(accepting);
    info!(%addr, "listening");
    Ok(ServerHandle {
        addr,
        state,
        shutdown,
        finished,
    })
}

async fn accept_loop(listener: TcpListener, state: AppState, mut signal: watch::Receiver<bool>) {
    let server = &state.config().server;
    let permits = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    let routes = warp::service(routes::all(state.clone(), signal.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    loop {
        // A connection is accepted only with a permit: beyond the cap, clients
        // wait in the listen backlog instead of exhausting memory or descriptors.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = signal.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = signal.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = RequestService {
            state: state.clone(),
            routes: routes.clone(),
            peer,
            activity: Arc::clone(&activity),
        };
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                hyper::service::service_fn(move |request| {
                    let mut service = service.clone();
                    async move { service.handle(request).await }
                }),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        let keep_alive = server.keep_alive_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(connection, activity, keep_alive).await;
        });
    }
    drop(listener);
    let grace = state.config().server.shutdown_grace;
    info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining requests in flight"
    );
    tokio::select! {
        () = graceful.shutdown() => info!("every connection closed"),
        () = tokio::time::sleep(grace) => warn!("connections still open after the grace period"),
    }
}

/// Drives a connection, closing it once it has been idle (no request in
/// flight) for the keep-alive timeout.
async fn serve_connection<C>(connection: C, activity: Arc<Activity>, keep_alive: Duration)
where
    C: std::future::Future<Output = Result<(), BoxError>> + Send,
{
    let mut connection = std::pin::pin!(connection);
    let tick = keep_alive
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(50));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(tick) => {
                if activity.idle_for() >= keep_alive {
                    debug!("idle keep-alive connection closed");
                    return;
                }
            }
        }
    }
}

/// When a connection last finished a request, and how many it has in flight.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Acquire)),
        )
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in flight on a connection, ended when dropped.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.begin();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[derive(Clone)]
struct RequestService<R> {
    state: AppState,
    routes: R,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<R> RequestService<R>
where
    R: Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible> + Clone,
{
    async fn handle(
        &mut self,
        request: Request<Incoming>,
    ) -> Result<Response<AnswerBody>, Infallible> {
        let started = Instant::now();
        let id = request_id(request.headers());
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let route = route_name(&path);
        let span = info_span!("request", id = %id, method = %method, path = %path);
        self.activity.begin();
        let gzip = accepts_gzip(request.headers());
        let bytes_in = content_length(request.headers());
        let response = self.answer(request).instrument(span.clone()).await;
        let mut response = finish(response, gzip, &self.activity).await;
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert("x-request-id", value);
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        let bytes_out = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        self.state.metrics().record_request(
            route,
            method.as_str(),
            status,
            elapsed,
            bytes_in,
            bytes_out,
        );
        span.in_scope(|| {
            info!(
                status,
                micros = elapsed.as_micros() as u64,
                bytes_out,
                "answered"
            );
        });
        self.activity.end();
        Ok(response)
    }

    async fn answer(&mut self, request: Request<Incoming>) -> warp::reply::Response {
        let key = rate_key(request.headers(), self.peer);
        if let Err(retry) = self.state.limiter().check(&key, Instant::now()) {
            self.state.metrics().record_rate_limited();
            return Problem::too_many_requests(retry.0).into_response();
        }
        // A long poll's wait (at most `live.max_wait_ms`) comes on top of the
        // request timeout, so the timeout never cuts a long poll within it. A
        // change stream is not cut either: its answer (the headers) comes at
        // once and its body is streamed, outside this timeout.
        let config = self.state.config();
        let timeout = config.server.request_timeout
            + routes::live::long_poll_allowance(request.uri(), &config.live);
        let call = self.routes.call(request);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => response,
            Err(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request took longer than {} s", timeout.as_secs()),
            )
            .into_response(),
        }
    }
}

/// The answer as sent: a streamed body in place, gzip when it pays and the
/// client accepts it.
async fn finish(
    response: warp::reply::Response,
    gzip: bool,
    activity: &Arc<Activity>,
) -> Response<AnswerBody> {
    let (mut parts, body) = response.into_parts();
    if let Some(streamed) = parts.extensions.remove::<StreamedBody>()
        && let Some(body) = streamed.take(activity)
    {
        return Response::from_parts(parts, body);
    }
    // Only JSON is gzipped, and whole: never an event stream (its events would
    // wait in the encoder's buffer), whatever body it comes in.
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.contains("json") && !kind.starts_with("text/event-stream"));
    if !(gzip && json) {
        return Response::from_parts(
            parts,
            BodyExt::boxed(BodyExt::map_err(body, BoxError::from)),
        );
    }
    // JSON answers are whole in memory already: compress them in one go.
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            warn!(%error, "answer body failed");
            Bytes::new()
        }
    };
    parts
        .headers
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if bytes.len() < GZIP_MIN_BYTES {
        return Response::from_parts(parts, full(bytes));
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    let compressed =
        std::io::Write::write_all(&mut encoder, &bytes).and_then(|()| encoder.finish());
    match compressed {
        Ok(compressed) => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, full(Bytes::from(compressed)))
        }
        Err(_) => Response::from_parts(parts, full(bytes)),
    }
}

fn full(bytes: Bytes) -> AnswerBody {
    BodyExt::boxed(BodyExt::map_err(Full::new(bytes), |never| match never {}))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                let param = param.trim().replace(' ', "");
                param == "q=0" || param == "q=0.0" || param == "q=0.00" || param == "q=0.000"
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn content_length(headers: &HeaderMap) -> u64 {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// The client's request id when it sent a sane one, otherwise a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|byte| byte.is_ascii_graphic())
        })
        .map_or_else(|| format!("{:016x}", fastrand::u64(..)), str::to_owned)
}

/// Rate limits apply per credential (hashed: the limiter never holds one), or
/// per address without one.
fn rate_key(headers: &HeaderMap, peer: SocketAddr) -> String {
    match headers.get(header::AUTHORIZATION) {
        Some(value) => format!("t:{:08x}", crc32fast::hash(value.as_bytes())),
        None => format!("a:{}", peer.ip()),
    }
}

/// The route a path belongs to: the `route` label of the metrics.
fn route_name(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["health"] => "health",
        ["metrics"] => "metrics",
        ["openapi.json"] => "openapi",
        ["v1", "stats"] => "stats",
        ["v1", "config"] => "config",
        ["v1", "tokens"] => "tokens",
        ["v1", "tables"] | ["v1", "tables", _] | ["v1", "tables", _, "access"] => "tables",
        ["v1", "tables", _, "records", ..] => "records",
        ["v1", "tables", _, "query"] => "query",
        ["v1", "sync", "pull"] => "sync_pull",
        ["v1", "sync", "push"] => "sync_push",
        ["v1", "sync", "ack"] => "sync_ack",
        ["v1", "sync", "stream"] => "sync_stream",
        ["v1", "sync", "sessions", ..] => "sessions",
        ["v1", "export"] => "export",
        ["v1", "import"] => "import",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&headers));
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&headers), "has space");
    }

    #[test]
    fn routes_are_named() {
        assert_eq!(route_name("/v1/tables/notes/records/n1"), "records");
        assert_eq!(route_name("/v1/sync/pull"), "sync_pull");
        assert_eq!(route_name("/nope"), "other");
    }
}
