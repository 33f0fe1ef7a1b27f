//! Outgoing webhooks end to end: a real server delivering to a scripted
//! receiver on loopback.
//!
//! - Delivery through an outage (down, then slow, then up): every event, in
//!   order, acknowledged once; retries keep the `webhook-id`; the delivery log
//!   shows the failed attempts.
//! - Standard Webhooks signatures checked with the receiver-side `Verifier`;
//!   tampering and replays refused; rotation signs with both secrets.
//! - `Retry-After`, 410 Gone disabling, re-enabling; replay; filters by kind
//!   and table; every event kind's payload; the durable outbox across a
//!   restart; the SSRF guard, redirects not followed; refused requests.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::config::{Config, FsyncPolicy, StorageConfig};
use mobilesyncdb::crdt::{ClientId, Edit};
use mobilesyncdb::webhook::sign::{self, Verifier, VerifyError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod common;

use common::{TempDir, local_config, local_config_with_loopback_webhooks, mint_token};

const ADMIN_KEY: &str = "msdb-dev-admin-key";
/// How long a test waits for something that should happen soon.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The scripted receiver.

/// How the receiver answers one request.
#[derive(Clone, Debug)]
enum Reply {
    /// This status, at once.
    Status(u16),
    /// This status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// 302 to this URL.
    Redirect(String),
    /// No answer for this long (beyond the sender's timeout).
    Slow(Duration),
    /// This status after this long (within the sender's timeout).
    Late(Duration, u16),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The status it was answered with; `None` when it was left hanging.
    answered: Option<u16>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn webhook_id(&self) -> &str {
        self.header(sign::HEADER_ID).expect("a webhook-id header")
    }

    /// The event id in the `webhook-id` (`evt_<id>`).
    fn event(&self) -> u64 {
        self.webhook_id()
            .strip_prefix("evt_")
            .and_then(|id| id.parse().ok())
            .expect("webhook-id is evt_<event id>")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn acknowledged(&self) -> bool {
        self.answered
            .is_some_and(|status| (200..300).contains(&status))
    }

    fn verify(&self, verifier: &Verifier) -> Result<(), VerifyError> {
        verifier.verify(
            self.header(sign::HEADER_ID),
            self.header(sign::HEADER_TIMESTAMP),
            self.header(sign::HEADER_SIGNATURE),
            &self.body,
            now_secs(),
        )
    }
}

#[derive(Default)]
struct Shared {
    /// One-shot replies first, then the standing one.
    script: Mutex<(VecDeque<Reply>, Option<Reply>)>,
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
}

impl Shared {
    fn next_reply(&self) -> Reply {
        let mut script = self.script.lock().unwrap();
        script
            .0
            .pop_front()
            .or_else(|| script.1.clone())
            .unwrap_or(Reply::Status(204))
    }
}

/// A loopback HTTP/1.1 receiver whose answers the test scripts. It can go
/// down (its port refuses connections) and come back on the same port.
struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Receiver {
    /// A receiver answering `reply` to everything, listening.
    async fn start(reply: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().1 = Some(reply);
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            shared,
            accept: Mutex::new(None),
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(stream, Arc::clone(&shared)));
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Stops listening: connections are refused until [`Receiver::up`].
    async fn down(&self) {
        let task = self.accept.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn up(&self) {
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(Instant::now() < deadline, "cannot listen again: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }

    /// Answers everything from now on with `reply` (after the queued ones).
    fn set(&self, reply: Reply) {
        self.shared.script.lock().unwrap().1 = Some(reply);
    }

    /// Answers the next requests with `replies`, in order.
    fn queue(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().0.extend(replies);
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds of what was received; returns it.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received: {:#?}",
                summary(&received)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every event in `events` was acknowledged.
    async fn wait_acknowledged(&self, events: &[u64]) -> Vec<Received> {
        self.wait_for(&format!("acknowledgements of {events:?}"), |received| {
            events.iter().all(|event| {
                received
                    .iter()
                    .any(|r| r.acknowledged() && r.event() == *event)
            })
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
    }
}

fn summary(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| format!("{:?} -> {:?}", r.header(sign::HEADER_ID), r.answered))
        .collect()
}

/// Reads one request (headers, `content-length` body), answers it as
/// scripted, and closes the connection.
async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut headers = BTreeMap::new();
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
    let body = buffer[head_end..head_end + length].to_vec();
    let reply = shared.next_reply();
    let (status, extra) = match &reply {
        Reply::Status(status) => (Some(*status), String::new()),
        Reply::RetryAfter(status, seconds) => {
            (Some(*status), format!("retry-after: {seconds}\r\n"))
        }
        Reply::Redirect(to) => (Some(302), format!("location: {to}\r\n")),
        Reply::Slow(_) => (None, String::new()),
        Reply::Late(_, status) => (Some(*status), String::new()),
    };
    shared.received.lock().unwrap().push(Received {
        at: Instant::now(),
        headers,
        body,
        answered: status,
    });
    match reply {
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            return;
        }
        Reply::Late(delay, _) => tokio::time::sleep(delay).await,
        _ => {}
    }
    let status = status.unwrap_or(200);
    // A short body, as many receivers send, except where HTTP forbids one.
    let body = if status == 204 { "" } else { "{\"ok\":true}" };
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\n{extra}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------
// The server, through its REST API.

struct Api {
    handle: ServerHandle,
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn start(config: Config) -> Api {
        let handle = mobilesyncdb::api::start(config)
            .await
            .expect("server starts");
        let url = handle.url();
        Api {
            handle,
            http: reqwest::Client::new(),
            url,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {token}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{path}: not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, json)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, json) = self.call(reqwest::Method::GET, path, ADMIN_KEY, None).await;
        assert_eq!(status, 200, "GET {path}: {json}");
        json
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value, expect: u16) -> Value {
        let (status, json) = self.call(method.clone(), path, ADMIN_KEY, Some(body)).await;
        assert_eq!(status, expect, "{method} {path}: {json}");
        json
    }

    async fn post(&self, path: &str, body: Value, expect: u16) -> Value {
        self.send(reqwest::Method::POST, path, body, expect).await
    }

    async fn patch(&self, path: &str, body: Value, expect: u16) -> Value {
        self.send(reqwest::Method::PATCH, path, body, expect).await
    }

    /// Creates a table of notes (`id`, `text`) readable by every token.
    async fn notes_table(&self, name: &str, manual: bool) {
        let mut body = json!({
            "primary_key": "id",
            "fields": [{"name": "id", "type": "string"}, {"name": "text", "type": "string"}],
            "access": {"kind": "shared"},
        });
        if manual {
            body["policy"] = json!({"kind": "manual"});
        }
        self.send(
            reqwest::Method::PUT,
            &format!("/v1/tables/{name}"),
            body,
            201,
        )
        .await;
    }

    async fn write(&self, table: &str, id: &str, text: &str) {
        self.post(
            &format!("/v1/tables/{table}/records"),
            json!({"id": id, "text": text}),
            201,
        )
        .await;
    }

    async fn change(&self, table: &str, id: &str, text: &str) {
        self.patch(
            &format!("/v1/tables/{table}/records/{id}"),
            json!({"text": text}),
            200,
        )
        .await;
    }

    async fn remove(&self, table: &str, id: &str) {
        let (status, json) = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/tables/{table}/records/{id}"),
                ADMIN_KEY,
                None,
            )
            .await;
        assert!(status == 200 || status == 204, "DELETE: {status} {json}");
    }

    /// Registers an endpoint; returns its id and secret.
    async fn register(&self, body: Value) -> (String, String) {
        let created = self.post("/v1/webhooks", body, 201).await;
        let id = created["id"].as_str().expect("an id").to_owned();
        let secret = created["secret"].as_str().expect("a secret").to_owned();
        assert!(secret.starts_with("whsec_"), "{created}");
        (id, secret)
    }

    /// Every retained event, oldest first.
    async fn events(&self) -> Vec<Value> {
        let page = self.get("/v1/events?after=0&limit=1000").await;
        page["events"].as_array().unwrap().clone()
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let log = self
            .get(&format!("/v1/webhooks/{id}/deliveries?limit=1000"))
            .await;
        log.as_array().unwrap().clone()
    }
}

fn event_ids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["id"].as_u64().unwrap())
        .collect()
}

/// The event ids of the acknowledged requests, in the order they arrived.
fn acknowledged(received: &[Received]) -> Vec<u64> {
    received
        .iter()
        .filter(|r| r.acknowledged())
        .map(Received::event)
        .collect()
}

/// Delivery is in order and once: the requests' events never go back, each
/// event is acknowledged once, and the only repeats before the
/// acknowledgement are attempts that failed.
fn assert_in_order_once(received: &[Received]) {
    let events: Vec<u64> = received.iter().map(Received::event).collect();
    assert!(
        events.windows(2).all(|pair| pair[0] <= pair[1]),
        "out of order: {events:?}"
    );
    let acks = acknowledged(received);
    assert!(
        acks.windows(2).all(|pair| pair[0] < pair[1]),
        "acknowledged twice or out of order: {acks:?}"
    );
    for (index, request) in received.iter().enumerate() {
        if request.acknowledged() {
            assert!(
                received[index + 1..]
                    .iter()
                    .all(|later| later.event() != request.event()),
                "event {} was sent again after a 2xx: {:#?}",
                request.event(),
                summary(received)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_delays_but_loses_nothing_and_keeps_the_order() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    receiver.down().await;
    let api = Api::start(local_config_with_loopback_webhooks(20, 300)).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({
            "url": receiver.url(),
            "events": ["record.created", "record.changed", "record.deleted"],
            "description": "outage test",
        }))
        .await;
    for n in 0..5 {
        api.write("notes", &format!("n{n}"), "hello").await;
    }
    api.change("notes", "n1", "changed").await;
    api.remove("notes", "n2").await;
    let events = api.events().await;
    let ids = event_ids(&events);
    assert_eq!(ids.len(), 7, "{events:#?}");

    // Down: attempts fail (connection refused) and are retried.
    let deadline = Instant::now() + PATIENCE;
    let failed = loop {
        let log = api.deliveries(&id).await;
        if log.len() >= 3 {
            break log;
        }
        assert!(Instant::now() < deadline, "no retries: {log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for entry in &failed {
        assert_eq!(entry["outcome"], "retrying", "{entry}");
        assert_eq!(
            entry["event"], ids[0],
            "nothing passes the first event: {entry}"
        );
        assert!(entry["status"].is_null(), "{entry}");
        assert!(entry["error"].is_string(), "{entry}");
    }
    let view = api.get(&format!("/v1/webhooks/{id}")).await;
    assert!(view["failing_since_ms"].is_u64(), "{view}");
    assert!(view["last_error"].is_string(), "{view}");
    assert_eq!(
        view["delivered_through"].as_u64().unwrap() + 1,
        ids[0],
        "{view}"
    );

    // Slow, then up.
    receiver.queue([
        Reply::Slow(Duration::from_millis(1_500)),
        Reply::Slow(Duration::from_millis(1_500)),
    ]);
    receiver.set(Reply::Status(200));
    receiver.up().await;
    let received = receiver.wait_acknowledged(&ids).await;
    assert_eq!(acknowledged(&received), ids);
    assert_in_order_once(&received);
    let hanging: Vec<&Received> = received.iter().filter(|r| r.answered.is_none()).collect();
    assert_eq!(hanging.len(), 2, "{:#?}", summary(&received));
    for request in &hanging {
        assert_eq!(
            request.event(),
            ids[0],
            "the timed-out attempts are of the first event"
        );
    }
    // Every request for an event carries the same body.
    for request in &received {
        let event = events.iter().find(|e| e["id"] == request.event()).unwrap();
        let body = request.json();
        assert_eq!(body["id"], request.webhook_id());
        assert_eq!(body["type"], event["kind"]);
        assert_eq!(body["data"], event["data"]);
    }
    let types: Vec<String> = acknowledged(&received)
        .iter()
        .map(|event| {
            let request = received.iter().find(|r| r.event() == *event).unwrap();
            request.json()["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "record.created",
            "record.created",
            "record.created",
            "record.created",
            "record.created",
            "record.changed",
            "record.deleted"
        ]
    );

    // The log shows the failures, the timeouts and the successes.
    let log = api.deliveries(&id).await;
    let delivered = log.iter().filter(|e| e["outcome"] == "delivered").count();
    assert_eq!(delivered, ids.len(), "{log:#?}");
    let timed_out = log
        .iter()
        .filter(|e| e["outcome"] == "retrying" && e["duration_ms"].as_u64().unwrap() >= 250)
        .count();
    assert!(timed_out >= 2, "{log:#?}");
    assert!(
        log.iter()
            .all(|e| e["outcome"] != "retrying" || e["error"].is_string())
    );
    let view = api.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(view["delivered_through"], ids[ids.len() - 1], "{view}");
    assert!(view["failing_since_ms"].is_null(), "{view}");
    assert!(view["last_error"].is_null(), "{view}");

    // Nothing is sent again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), received.len());
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_the_verifier_refuses_tampering() {
    // The published Standard Webhooks vector, through the public verifier.
    let vector = Verifier::from_secret_str("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    vector
        .verify(
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            br#"{"test": 2432232314}"#,
            1_614_265_330,
        )
        .unwrap();

    let receiver = Receiver::start(Reply::Status(204)).await;
    let api = Api::start(local_config_with_loopback_webhooks(20, 2_000)).await;
    api.notes_table("notes", false).await;
    let (id, secret) = api
        .register(json!({"url": receiver.url(), "events": ["*"]}))
        .await;
    // The first attempt fails: the retry must carry the same id.
    receiver.queue([Reply::Status(500)]);
    api.write("notes", "n1", "signed").await;
    let received = receiver
        .wait_for("an acknowledged delivery", |r| {
            r.iter().any(Received::acknowledged)
        })
        .await;
    assert_eq!(received.len(), 2, "{:#?}", summary(&received));
    let (first, retry) = (&received[0], &received[1]);
    assert_eq!(first.answered, Some(500));
    assert_eq!(
        first.webhook_id(),
        retry.webhook_id(),
        "a retry keeps its id"
    );
    assert_eq!(first.body, retry.body, "a retry keeps its body");
    assert_eq!(first.header("content-type"), Some("application/json"));

    let verifier = Verifier::from_secret_str(&secret).unwrap();
    for request in &received {
        request.verify(&verifier).expect("the delivery verifies");
        let timestamp: i64 = request
            .header(sign::HEADER_TIMESTAMP)
            .unwrap()
            .parse()
            .unwrap();
        assert!((now_secs() - timestamp).abs() <= 5, "{timestamp}");
        let signature = request.header(sign::HEADER_SIGNATURE).unwrap();
        assert!(signature.starts_with("v1,"), "{signature}");
        assert_eq!(signature.split(' ').count(), 1, "one secret, one signature");
    }
    let request = retry;
    let headers = |id: Option<&str>| {
        (
            id.map(str::to_owned),
            request.header(sign::HEADER_TIMESTAMP).map(str::to_owned),
            request.header(sign::HEADER_SIGNATURE).map(str::to_owned),
        )
    };
    // A tampered body.
    let mut body = request.json();
    body["data"]["row"]["text"] = json!("forged");
    let tampered = serde_json::to_vec(&body).unwrap();
    let (hid, ts, sig) = headers(Some(request.webhook_id()));
    assert_eq!(
        verifier.verify(
            hid.as_deref(),
            ts.as_deref(),
            sig.as_deref(),
            &tampered,
            now_secs()
        ),
        Err(VerifyError::NoMatchingSignature)
    );
    // A tampered id (a different event).
    let (hid, ts, sig) = headers(Some("evt_999999"));
    assert_eq!(
        verifier.verify(
            hid.as_deref(),
            ts.as_deref(),
            sig.as_deref(),
            &request.body,
            now_secs()
        ),
        Err(VerifyError::NoMatchingSignature)
    );
    // A replay: the same delivery, presented ten minutes later.
    let (hid, ts, sig) = headers(Some(request.webhook_id()));
    assert!(matches!(
        verifier.verify(
            hid.as_deref(),
            ts.as_deref(),
            sig.as_deref(),
            &request.body,
            now_secs() + 600
        ),
        Err(VerifyError::TimestampOutOfTolerance { .. })
    ));
    // Another endpoint's secret.
    let other = Verifier::new(sign::Secret::generate().unwrap());
    assert_eq!(
        request.verify(&other),
        Err(VerifyError::NoMatchingSignature)
    );

    // A secret chosen by the user signs as the specification says.
    let chosen = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (_, returned) = api
        .register(json!({"url": receiver.url(), "events": ["record.changed"], "secret": chosen}))
        .await;
    assert_eq!(returned, chosen);
    api.change("notes", "n1", "again").await;
    // Both endpoints deliver it, each on its own worker, in either order:
    // wait for the two.
    let received = receiver
        .wait_for("the record.changed delivery to both endpoints", |r| {
            r.iter()
                .filter(|r| r.acknowledged() && r.json()["type"] == "record.changed")
                .count()
                >= 2
        })
        .await;
    let changed: Vec<&Received> = received
        .iter()
        .filter(|r| r.json()["type"] == "record.changed")
        .collect();
    // Both endpoints got it, with the same id, each signed with its own secret.
    let chosen_secret = sign::Secret::parse(chosen).unwrap();
    let expected = |r: &Received| {
        let timestamp: i64 = r.header(sign::HEADER_TIMESTAMP).unwrap().parse().unwrap();
        sign::signature(&chosen_secret, r.webhook_id(), timestamp, &r.body)
    };
    assert!(
        changed
            .iter()
            .any(|r| r.header(sign::HEADER_SIGNATURE) == Some(expected(r).as_str())),
        "{changed:#?}"
    );

    // Rotation: both secrets sign during the grace period.
    let rotated = api
        .post(&format!("/v1/webhooks/{id}/rotate"), json!({}), 200)
        .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(
        rotated["previous_valid_until_ms"].as_u64().unwrap() > 0,
        "{rotated}"
    );
    let before = receiver.received().len();
    api.write("notes", "n2", "after rotation").await;
    let received = receiver
        .wait_for("a delivery after the rotation", |r| {
            r[before..]
                .iter()
                .any(|r| r.acknowledged() && r.json()["type"] == "record.created")
        })
        .await;
    let request = received[before..]
        .iter()
        .find(|r| r.json()["type"] == "record.created")
        .unwrap();
    let header = request.header(sign::HEADER_SIGNATURE).unwrap();
    let signatures: Vec<&str> = header.split(' ').collect();
    assert_eq!(signatures.len(), 2, "{header}");
    let old = verifier;
    let new = Verifier::from_secret_str(&new_secret).unwrap();
    for verifier in [&old, &new] {
        request
            .verify(verifier)
            .expect("verifies with either secret");
    }
    // Each signature is one secret's.
    let single = |signature: &str, verifier: &Verifier| {
        verifier
            .verify(
                request.header(sign::HEADER_ID),
                request.header(sign::HEADER_TIMESTAMP),
                Some(signature),
                &request.body,
                now_secs(),
            )
            .is_ok()
    };
    assert!(single(signatures[0], &new) && !single(signatures[0], &old));
    assert!(single(signatures[1], &old) && !single(signatures[1], &new));
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_410_disables_until_enabled_again() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut config = local_config_with_loopback_webhooks(20, 2_000);
    config.webhooks.retry_max_ms = 5_000;
    let api = Api::start(config).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["record.created"]}))
        .await;

    // 503 with Retry-After: 1 — the next attempt waits at least a second,
    // although the backoff alone would retry after ~20 ms.
    receiver.queue([Reply::RetryAfter(503, 1)]);
    api.write("notes", "n1", "wait").await;
    let received = receiver
        .wait_for("the retry", |r| r.iter().any(Received::acknowledged))
        .await;
    assert_eq!(received.len(), 2, "{:#?}", summary(&received));
    let waited = received[1].at.duration_since(received[0].at);
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}"
    );
    let log = api.deliveries(&id).await;
    let failed = log.iter().find(|e| e["outcome"] == "retrying").unwrap();
    assert_eq!(failed["status"], 503, "{failed}");
    assert_eq!(failed["error"], "HTTP 503", "{failed}");

    // 410 Gone disables the endpoint.
    receiver.queue([Reply::Status(410)]);
    api.write("notes", "n2", "gone").await;
    let gone_event = api.get("/v1/events?after=0").await["latest"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let view = loop {
        let view = api.get(&format!("/v1/webhooks/{id}")).await;
        if view["enabled"] == false {
            break view;
        }
        assert!(Instant::now() < deadline, "never disabled: {view}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let reason = view["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("410"), "{view}");
    let log = api.deliveries(&id).await;
    assert_eq!(log[0]["outcome"], "disabled", "{log:#?}");
    assert_eq!(log[0]["status"], 410, "{log:#?}");
    // No further attempts while disabled, whatever is written.
    api.write("notes", "n3", "while disabled").await;
    let seen = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), seen, "an attempt while disabled");
    assert_eq!(
        api.get(&format!("/v1/webhooks/{id}")).await["delivered_through"]
            .as_u64()
            .unwrap()
            + 1,
        gone_event
    );

    // Enabled again: it resumes where it stopped, with the event that got 410.
    let enabled = api
        .patch(&format!("/v1/webhooks/{id}"), json!({"enabled": true}), 200)
        .await;
    assert_eq!(enabled["enabled"], true, "{enabled}");
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    let received = receiver.wait_acknowledged(&[gone_event]).await;
    let after: Vec<&Received> = received[seen..].iter().collect();
    assert_eq!(after[0].event(), gone_event, "{:#?}", summary(&received));
    // The write made while it was disabled follows: disabled endpoints
    // still have their events made, so that they resume where they stopped.
    let latest = api.get("/v1/events?after=0").await["latest"]
        .as_u64()
        .unwrap();
    assert_eq!(latest, gone_event + 1, "the event made while disabled");
    receiver.wait_acknowledged(&[latest]).await;
    api.write("notes", "n4", "after").await;
    let latest = api.get("/v1/events?after=0").await["latest"]
        .as_u64()
        .unwrap();
    let received = receiver.wait_acknowledged(&[latest]).await;
    assert_in_order_once(&received[seen..]);

    // PATCH enabled=false disables it by hand.
    let disabled = api
        .patch(
            &format!("/v1/webhooks/{id}"),
            json!({"enabled": false}),
            200,
        )
        .await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "disabled through the API");
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_with_the_original_ids_and_refuses_what_is_gone() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut config = local_config_with_loopback_webhooks(20, 2_000);
    config.engine.events.max_entries = 4;
    let api = Api::start(config).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["record.created"]}))
        .await;
    for n in 0..3 {
        api.write("notes", &format!("n{n}"), "first").await;
    }
    let ids = event_ids(&api.events().await);
    let received = receiver.wait_acknowledged(&ids).await;
    assert_eq!(acknowledged(&received), ids);
    let first_time = received.clone();

    let view = api
        .post(
            &format!("/v1/webhooks/{id}/replay"),
            json!({"from": ids[1]}),
            200,
        )
        .await;
    assert_eq!(view["delivered_through"], ids[0], "{view}");
    let received = receiver
        .wait_for("the replay", |r| acknowledged(r).len() == 5)
        .await;
    let replayed = &received[first_time.len()..];
    assert_eq!(acknowledged(replayed), ids[1..]);
    for request in replayed {
        let original = first_time
            .iter()
            .find(|r| r.event() == request.event())
            .unwrap();
        assert_eq!(request.webhook_id(), original.webhook_id());
        assert_eq!(request.body, original.body, "the same payload");
    }

    // The retention keeps 4 events: the first ones are gone.
    for n in 3..8 {
        api.write("notes", &format!("n{n}"), "more").await;
    }
    let page = api.get("/v1/events?after=0").await;
    let oldest = page["oldest"].as_u64().unwrap();
    assert!(oldest > ids[0], "{page}");
    let (status, problem) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/{id}/replay"),
            ADMIN_KEY,
            Some(json!({"from": ids[0]})),
        )
        .await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "event_not_retained", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&oldest.to_string()),
        "{problem}"
    );
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_the_kinds_and_tables_they_ask_for_with_their_payloads() {
    let all = Receiver::start(Reply::Status(204)).await;
    let some = Receiver::start(Reply::Status(204)).await;
    let api = Api::start(local_config_with_loopback_webhooks(20, 2_000)).await;
    let (all_id, _) = api
        .register(json!({"url": all.url(), "events": ["*"]}))
        .await;
    api.register(json!({
        "url": some.url(),
        "events": ["record.created", "conflict.opened"],
        "tables": ["notes"],
    }))
    .await;
    let listed = api.get("/v1/webhooks").await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let shown = api.get(&format!("/v1/webhooks/{all_id}")).await;
    assert_eq!(shown["events"].as_array().unwrap().len(), 8, "{shown}");
    assert!(
        shown.get("secret").is_none() && shown.get("secrets").is_none(),
        "{shown}"
    );

    api.notes_table("notes", true).await;
    api.notes_table("other", false).await;
    api.write("notes", "n1", "base").await;
    api.write("other", "o1", "elsewhere").await;
    api.change("notes", "n1", "edited").await;
    api.remove("other", "o1").await;

    // Two concurrent edits of a manual-policy field: an open conflict.
    let db = api.handle.state().database().clone();
    let heads = db.heads("notes", "n1").unwrap().unwrap();
    db.patch_at(
        "notes",
        "n1",
        vec![Edit::set("text", "from phone a")],
        &heads,
        &ClientId::from("phone-a"),
    )
    .unwrap();
    db.patch_at(
        "notes",
        "n1",
        vec![Edit::set("text", "from phone b")],
        &heads,
        &ClientId::from("phone-b"),
    )
    .unwrap();
    let conflicts = api.get("/v1/conflicts?open=true").await;
    let conflict = conflicts["conflicts"]
        .as_array()
        .and_then(|list| list.first())
        .unwrap_or_else(|| panic!("an open conflict: {conflicts}"))
        .clone();
    let conflict_id = conflict["id"].as_u64().unwrap();
    api.post(
        &format!("/v1/conflicts/{conflict_id}/resolve"),
        json!({"value": "merged by hand"}),
        200,
    )
    .await;

    let events = api.events().await;
    let ids = event_ids(&events);
    let received = all.wait_acknowledged(&ids).await;
    assert_in_order_once(&received);
    let bodies: Vec<Value> = received
        .iter()
        .filter(|r| r.acknowledged())
        .map(Received::json)
        .collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    let expected: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, expected, "{bodies:#?}");
    let of = |kind: &str| -> Vec<&Value> { bodies.iter().filter(|b| b["type"] == kind).collect() };
    for kind in [
        "schema.changed",
        "record.created",
        "record.changed",
        "record.deleted",
        "conflict.detected",
        "conflict.opened",
        "conflict.resolved",
    ] {
        assert!(!of(kind).is_empty(), "no {kind}: {kinds:?}");
    }
    // Every body: id, type, RFC 3339 timestamp, data.
    for body in &bodies {
        assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
        let timestamp = body["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() == 24 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
    }
    let schema = of("schema.changed")[0];
    assert_eq!(schema["data"]["table"], "notes", "{schema}");
    assert_eq!(schema["data"]["created"], true, "{schema}");
    let created = of("record.created")[0];
    assert_eq!(created["data"]["table"], "notes", "{created}");
    assert_eq!(created["data"]["id"], "n1", "{created}");
    assert_eq!(
        created["data"]["row"],
        json!({"id": "n1", "text": "base"}),
        "{created}"
    );
    assert!(created["data"]["seq"].is_u64(), "{created}");
    assert!(created["data"]["writer"].is_string(), "{created}");
    let changed = of("record.changed")[0];
    assert_eq!(changed["data"]["row"]["text"], "edited", "{changed}");
    let deleted = of("record.deleted")[0];
    assert_eq!(deleted["data"]["table"], "other", "{deleted}");
    assert_eq!(deleted["data"]["id"], "o1", "{deleted}");
    assert!(deleted["data"]["row"].is_null(), "{deleted}");
    let detected = of("conflict.detected")[0];
    assert_eq!(detected["data"]["field"], "text", "{detected}");
    assert_eq!(detected["data"]["policy"], "manual", "{detected}");
    assert_eq!(
        detected["data"]["candidates"].as_array().unwrap().len(),
        2,
        "{detected}"
    );
    let opened = of("conflict.opened")[0];
    assert_eq!(opened["data"]["id"], conflict_id, "{opened}");
    assert_eq!(opened["data"]["open"], true, "{opened}");
    let resolved = of("conflict.resolved")[0];
    assert_eq!(resolved["data"]["id"], conflict_id, "{resolved}");
    // Values are plain JSON, as `GET /v1/conflicts` shows them.
    assert_eq!(
        resolved["data"]["resolution"]["value"], "merged by hand",
        "{resolved}"
    );
    assert_eq!(resolved["data"]["open"], false, "{resolved}");
    assert!(
        detected["data"]["candidates"][0]["value"].is_string(),
        "{detected}"
    );
    assert!(
        detected["data"]["candidates"][0]["stamp"]["ms"].is_u64(),
        "{detected}"
    );

    // The filtered endpoint: record.created and conflict.opened of `notes` only.
    let wanted: Vec<u64> = events
        .iter()
        .filter(|e| {
            (e["kind"] == "record.created" || e["kind"] == "conflict.opened")
                && e["table"] == "notes"
        })
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(wanted.len(), 2);
    let received = some.wait_acknowledged(&wanted).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received_now = some.received();
    assert_eq!(received_now.len(), received.len());
    assert_eq!(acknowledged(&received_now), wanted);
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_stale_for_the_change_log_is_announced() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let mut config = local_config_with_loopback_webhooks(20, 2_000);
    config.engine.retention.max_entries = 3;
    config.engine.retention.min_entries = 1;
    let api = Api::start(config).await;
    api.notes_table("notes", false).await;
    api.register(json!({"url": receiver.url(), "events": ["client.too_stale"]}))
        .await;
    for n in 0..10 {
        api.write("notes", &format!("n{n}"), "x").await;
    }
    let token = mint_token(&api.handle, "ann", "ann-phone");
    let (status, batch) = api
        .call(
            reqwest::Method::POST,
            "/v1/sync/pull",
            &token,
            Some(json!({"tables": ["notes"], "cursor": 1})),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let received = receiver
        .wait_for("client.too_stale", |r| r.iter().any(Received::acknowledged))
        .await;
    let body = received[0].json();
    assert_eq!(body["type"], "client.too_stale", "{body}");
    assert_eq!(body["data"]["device"], "ann-phone", "{body}");
    assert_eq!(body["data"]["cursor"], 1, "{body}");
    assert!(body["data"]["horizon"].as_u64().unwrap() > 1, "{body}");
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_restart() {
    let dir = TempDir::new("outbox");
    let receiver = Receiver::start(Reply::Status(204)).await;
    receiver.down().await;
    let mut config = local_config_with_loopback_webhooks(20, 2_000);
    config.storage = StorageConfig {
        data_dir: Some(dir.path().to_owned()),
        fsync: FsyncPolicy::Always,
        ..StorageConfig::default()
    };
    let api = Api::start(config.clone()).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["record.created", "record.changed"]}))
        .await;
    for n in 0..6 {
        api.write("notes", &format!("n{n}"), "before the restart")
            .await;
    }
    api.change("notes", "n0", "changed").await;
    let events = api.events().await;
    let ids = event_ids(&events);
    assert_eq!(ids.len(), 7);
    // It tried and failed.
    let deadline = Instant::now() + PATIENCE;
    while api.deliveries(&id).await.is_empty() {
        assert!(Instant::now() < deadline, "no attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.handle.shutdown().await;

    let api = Api::start(config).await;
    assert_eq!(
        api.events().await,
        events,
        "the events are kept with the data"
    );
    let view = api.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(view["enabled"], true, "{view}");
    assert_eq!(
        view["delivered_through"].as_u64().unwrap() + 1,
        ids[0],
        "{view}"
    );
    receiver.up().await;
    let received = receiver.wait_acknowledged(&ids).await;
    assert_eq!(acknowledged(&received), ids);
    assert_in_order_once(&received);
    for request in &received {
        let event = events.iter().find(|e| e["id"] == request.event()).unwrap();
        assert_eq!(request.json()["data"], event["data"]);
    }
    // The position is kept too: a second restart sends nothing again.
    let deadline = Instant::now() + PATIENCE;
    while api.get(&format!("/v1/webhooks/{id}")).await["delivered_through"] != ids[6] {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let api_config = api.handle.state().config().clone();
    api.handle.shutdown().await;
    let seen = receiver.received().len();
    let api = Api::start(api_config).await;
    api.write("notes", "n9", "after the second restart").await;
    let latest = api.get("/v1/events?after=0").await["latest"]
        .as_u64()
        .unwrap();
    let received = receiver.wait_acknowledged(&[latest]).await;
    // At least once: the last event may come again after a restart, never an older one.
    for request in &received[seen..] {
        assert!(request.event() >= ids[6], "{:#?}", summary(&received));
    }
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_and_redirects_not_followed() {
    let api = Api::start(local_config()).await;
    for url in [
        "http://10.0.0.1/",
        "http://192.168.1.10/",
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]:9/",
        "http://169.254.169.254/",
        "http://[fe80::1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let (status, problem) = api
            .call(
                reqwest::Method::POST,
                "/v1/webhooks",
                ADMIN_KEY,
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {problem}");
        assert_eq!(
            problem["code"], "webhook_target_refused",
            "{url}: {problem}"
        );
    }
    assert_eq!(api.get("/v1/webhooks").await, json!([]));
    api.handle.shutdown().await;

    // Allowed loopback: a redirect to another loopback listener is not followed.
    let elsewhere = Receiver::start(Reply::Status(204)).await;
    let redirecting = Receiver::start(Reply::Status(204)).await;
    redirecting.queue([Reply::Redirect(elsewhere.url())]);
    let api = Api::start(local_config_with_loopback_webhooks(20, 2_000)).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": redirecting.url(), "events": ["record.created"]}))
        .await;
    api.write("notes", "n1", "redirect me").await;
    let received = redirecting
        .wait_for("the retry after the redirect", |r| {
            r.iter().any(Received::acknowledged)
        })
        .await;
    assert_eq!(received[0].answered, Some(302));
    assert_eq!(received[0].event(), received[1].event());
    assert_eq!(elsewhere.connections(), 0, "the redirect was followed");
    let log = api.deliveries(&id).await;
    let redirected = log
        .iter()
        .find(|e| e["status"] == 302)
        .expect("a 302 in the log");
    assert_eq!(redirected["outcome"], "retrying", "{redirected}");
    assert!(
        redirected["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{redirected}"
    );
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_problems() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let api = Api::start(local_config_with_loopback_webhooks(20, 2_000)).await;
    let refused = |body: Value, status: u16, code: &'static str| {
        let api = &api;
        async move {
            let (got, problem) = api
                .call(
                    reqwest::Method::POST,
                    "/v1/webhooks",
                    ADMIN_KEY,
                    Some(body.clone()),
                )
                .await;
            assert_eq!(got, status, "{body}: {problem}");
            assert_eq!(problem["code"], code, "{body}: {problem}");
            problem
        }
    };
    let problem = refused(
        json!({"url": receiver.url(), "events": ["record.eaten"]}),
        400,
        "invalid_webhook",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    for kind in [
        "record.eaten",
        "record.created",
        "conflict.resolved",
        "client.too_stale",
    ] {
        assert!(detail.contains(kind), "{detail}");
    }
    // The body is checked before the host is looked up.
    let problem = refused(
        json!({"url": "http://no-such-host.invalid/hook", "events": ["record.eaten"]}),
        400,
        "invalid_webhook",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("record.created"),
        "{problem}"
    );
    let (status, problem) = api
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            ADMIN_KEY,
            Some(json!({"url": "http://no-such-host.invalid/hook", "events": ["*"]})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["code"], "webhook_target_refused", "{problem}");
    refused(
        json!({"url": receiver.url(), "events": []}),
        400,
        "invalid_webhook",
    )
    .await;
    refused(
        json!({"url": "ftp://example.com/hook", "events": ["*"]}),
        400,
        "webhook_target_refused",
    )
    .await;
    refused(
        json!({"url": "file:///etc/passwd", "events": ["*"]}),
        400,
        "webhook_target_refused",
    )
    .await;
    refused(
        json!({"url": "http://user:secret@example.com/hook", "events": ["*"]}),
        400,
        "webhook_target_refused",
    )
    .await;
    refused(
        json!({"url": "not a url", "events": ["*"]}),
        400,
        "webhook_target_refused",
    )
    .await;
    refused(
        json!({"url": receiver.url(), "events": ["*"], "secret": "whsec_%%%"}),
        400,
        "invalid_secret",
    )
    .await;
    let (status, _) = api
        .call(
            reqwest::Method::POST,
            "/v1/webhooks",
            ADMIN_KEY,
            Some(json!({"url": receiver.url(), "events": ["*"], "colour": "red"})),
        )
        .await;
    assert_eq!(status, 400, "unknown fields are refused");

    for (method, path) in [
        (reqwest::Method::GET, "/v1/webhooks/wh_0000000000000000"),
        (reqwest::Method::DELETE, "/v1/webhooks/wh_0000000000000000"),
        (
            reqwest::Method::POST,
            "/v1/webhooks/wh_0000000000000000/rotate",
        ),
        (
            reqwest::Method::GET,
            "/v1/webhooks/wh_0000000000000000/deliveries",
        ),
    ] {
        let (status, problem) = api.call(method.clone(), path, ADMIN_KEY, None).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert_eq!(problem["code"], "unknown_webhook", "{problem}");
    }
    let (status, problem) = api
        .call(
            reqwest::Method::PATCH,
            "/v1/webhooks/wh_0000000000000000",
            ADMIN_KEY,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 404, "{problem}");

    // Not an admin.
    let token = mint_token(&api.handle, "ann", "ann-phone");
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["*"]}))
        .await;
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/v1/webhooks".to_owned(),
            Some(json!({"url": receiver.url(), "events": ["*"]})),
        ),
        (reqwest::Method::GET, "/v1/webhooks".to_owned(), None),
        (reqwest::Method::GET, format!("/v1/webhooks/{id}"), None),
        (reqwest::Method::DELETE, format!("/v1/webhooks/{id}"), None),
        (
            reqwest::Method::POST,
            format!("/v1/webhooks/{id}/rotate"),
            None,
        ),
        (reqwest::Method::GET, "/v1/events".to_owned(), None),
    ] {
        let (status, problem) = api.call(method.clone(), &path, &token, body).await;
        assert_eq!(status, 403, "{method} {path}: {problem}");
    }
    let (status, _) = api
        .call(reqwest::Method::GET, "/v1/webhooks", "wrong-key", None)
        .await;
    assert_eq!(status, 401);

    // Deleting works once, then the endpoint is unknown.
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhooks/{id}"),
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(status, 404);
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_too_long_disables_and_enabling_again_starts_afresh() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    receiver.down().await;
    let mut config = local_config_with_loopback_webhooks(20, 2_000);
    config.webhooks.disable_after_ms = 300;
    let api = Api::start(config).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["record.created"]}))
        .await;
    api.write("notes", "n1", "never answered").await;
    let deadline = Instant::now() + PATIENCE;
    let view = loop {
        let view = api.get(&format!("/v1/webhooks/{id}")).await;
        if view["enabled"] == false {
            break view;
        }
        assert!(Instant::now() < deadline, "never disabled: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("every attempt failed"),
        "{view}"
    );
    let log = api.deliveries(&id).await;
    assert_eq!(log[0]["outcome"], "disabled", "{log:#?}");
    assert!(log.len() >= 2, "{log:#?}");

    // Enabled again, one more failure is retried, not counted with the old ones.
    receiver.queue([Reply::Status(500)]);
    receiver.up().await;
    api.patch(&format!("/v1/webhooks/{id}"), json!({"enabled": true}), 200)
        .await;
    let event = api.get("/v1/events?after=0").await["latest"]
        .as_u64()
        .unwrap();
    let received = receiver.wait_acknowledged(&[event]).await;
    assert_eq!(received.len(), 2, "{:#?}", summary(&received));
    assert_eq!(received[0].answered, Some(500));
    let view = api.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(view["enabled"], true, "{view}");
    api.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_an_endpoint_during_an_attempt_sends_nothing_twice() {
    let receiver = Receiver::start(Reply::Status(204)).await;
    let api = Api::start(local_config_with_loopback_webhooks(20, 5_000)).await;
    api.notes_table("notes", false).await;
    let (id, _) = api
        .register(json!({"url": receiver.url(), "events": ["record.created"]}))
        .await;
    receiver.queue([Reply::Late(Duration::from_millis(500), 204)]);
    api.write("notes", "n1", "in flight").await;
    receiver.wait_for("the attempt", |r| !r.is_empty()).await;
    // While the receiver takes its time: a rotation and a new description.
    api.post(&format!("/v1/webhooks/{id}/rotate"), json!({}), 200)
        .await;
    api.patch(
        &format!("/v1/webhooks/{id}"),
        json!({"description": "edited"}),
        200,
    )
    .await;
    api.write("notes", "n2", "next").await;
    let ids = event_ids(&api.events().await);
    let received = receiver.wait_acknowledged(&ids).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received_now = receiver.received();
    assert_eq!(received_now.len(), received.len());
    assert_eq!(
        acknowledged(&received_now),
        ids,
        "{:#?}",
        summary(&received_now)
    );
    assert_in_order_once(&received_now);
    api.handle.shutdown().await;
}
