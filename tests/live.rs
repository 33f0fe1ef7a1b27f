//! Live change notifications over loopback: long-poll pulls
//! (`POST /v1/sync/pull?wait_ms=`) and the change stream
//! (`GET /v1/sync/stream`, server-sent events).
//!
//! Assertions are on behaviour only: what was answered, and in which order
//! relative to the writes. Times appear only as generous bounds on waits that
//! must end, never as thresholds a loaded machine could miss.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::config::{Config, DEV_ADMIN_KEY};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{local_config, mint_token};

/// Notes belong to their owner.
const NOTES: &str = r#"{"primary_key":"id","fields":[{"name":"id","type":"string","required":true},{"name":"owner","type":"string"},{"name":"text","type":"string"}],"indexes":[{"field":"owner"}],"access":{"kind":"owner","field":"owner"}}"#;
/// Tasks are shared by every user.
const TASKS: &str = r#"{"primary_key":"id","fields":[{"name":"id","type":"string","required":true},{"name":"text","type":"string"}],"access":{"kind":"shared"}}"#;
/// Logs have no access rule: admin keys only.
const LOGS: &str = r#"{"primary_key":"id","fields":[{"name":"id","type":"string","required":true},{"name":"text","type":"string"}]}"#;

/// The longest any single wait of these tests may take before it counts as
/// hanging: far beyond what any of them needs.
const PATIENCE: Duration = Duration::from_secs(60);

fn admin() -> String {
    format!("Bearer {DEV_ADMIN_KEY}")
}

struct Server {
    handle: ServerHandle,
    client: reqwest::Client,
}

impl Server {
    /// A server with the three tables; `tune` adjusts the configuration.
    async fn start(tune: impl FnOnce(&mut Config)) -> Server {
        let mut config = local_config();
        config.limits.requests_per_second = 100_000;
        config.limits.burst = 100_000;
        tune(&mut config);
        let handle = mobilesyncdb::api::start(config)
            .await
            .expect("server starts");
        let server = Server {
            handle,
            client: reqwest::Client::new(),
        };
        for (table, schema) in [("notes", NOTES), ("tasks", TASKS), ("logs", LOGS)] {
            let answer = server
                .client
                .put(server.url(&format!("/v1/tables/{table}")))
                .header("authorization", admin())
                .header("content-type", "application/json")
                .body(schema)
                .send()
                .await
                .expect("create table");
            assert_eq!(answer.status(), StatusCode::CREATED, "table {table}");
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    fn token(&self, user: &str, device: &str) -> String {
        format!("Bearer {}", mint_token(&self.handle, user, device))
    }

    async fn latest_seq(&self) -> u64 {
        let health: Value = self
            .client
            .get(self.url("/health"))
            .send()
            .await
            .expect("health")
            .text()
            .await
            .map(|text| serde_json::from_str(&text).expect("health JSON"))
            .expect("health body");
        health["latest_seq"].as_u64().expect("latest_seq")
    }

    /// Creates a record and returns its sequence number (its `ETag`).
    async fn create(&self, auth: &str, table: &str, fields: Value) -> u64 {
        create_with(&self.client, &self.handle.url(), auth, table, fields).await
    }

    /// Changes a record's fields (as admin) and returns its sequence number.
    async fn patch(&self, table: &str, id: &str, fields: Value) -> u64 {
        let answer = self
            .client
            .patch(self.url(&format!("/v1/tables/{table}/records/{id}")))
            .header("authorization", admin())
            .header("content-type", "application/json")
            .body(fields.to_string())
            .send()
            .await
            .expect("patch");
        let status = answer.status();
        let etag = answer
            .headers()
            .get("etag")
            .and_then(|value| value.to_str().ok())
            .map(|tag| tag.trim_matches('"').parse::<u64>().expect("numeric etag"));
        let body = answer.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "patch {table}/{id}: {body}");
        etag.expect("etag")
    }

    /// A JSON pull of `tables` after `cursor`, long-polling `wait_ms` when set.
    async fn pull(&self, auth: &str, tables: &[&str], cursor: u64, wait_ms: Option<u64>) -> Pulled {
        pull_with(
            &self.client,
            &self.handle.url(),
            auth,
            tables,
            cursor,
            wait_ms,
        )
        .await
    }

    /// Opens a change stream; the answer as it came when it is not a stream.
    async fn stream(
        &self,
        auth: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Result<Events, reqwest::Response> {
        let mut request = self
            .client
            .get(self.url(&format!("/v1/sync/stream?{query}")))
            .header("authorization", auth)
            .header("accept-encoding", "gzip");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("stream request sent");
        if response.status() != StatusCode::OK {
            return Err(response);
        }
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(kind, "text/event-stream");
        assert!(
            response.headers().get("content-encoding").is_none(),
            "an event stream is never compressed"
        );
        Ok(Events {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .header("authorization", admin())
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(' ')?;
                value.parse().ok()
            })
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

/// Creates a record and returns its sequence number (its `ETag`).
async fn create_with(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    table: &str,
    fields: Value,
) -> u64 {
    let answer = client
        .post(format!("{base}/v1/tables/{table}/records"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(fields.to_string())
        .send()
        .await
        .expect("create");
    let status = answer.status();
    let etag = answer
        .headers()
        .get("etag")
        .and_then(|value| value.to_str().ok())
        .map(|tag| tag.trim_matches('"').parse::<u64>().expect("numeric etag"));
    let body = answer.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "create in {table}: {body}");
    etag.expect("etag")
}

/// A JSON pull of `tables` after `cursor`, long-polling `wait_ms` when set.
async fn pull_with(
    client: &reqwest::Client,
    base: &str,
    auth: &str,
    tables: &[&str],
    cursor: u64,
    wait_ms: Option<u64>,
) -> Pulled {
    let path = match wait_ms {
        Some(wait) => format!("/v1/sync/pull?wait_ms={wait}"),
        None => "/v1/sync/pull".to_owned(),
    };
    let started = Instant::now();
    let answer = client
        .post(format!("{base}{path}"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(json!({"tables": tables, "cursor": cursor}).to_string())
        .timeout(PATIENCE)
        .send()
        .await
        .expect("pull sent");
    let status = answer.status();
    let body = answer.text().await.expect("pull body");
    assert_eq!(status, StatusCode::OK, "pull: {body}");
    let batch: Value = serde_json::from_str(&body).expect("pull JSON");
    let records = batch["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .flat_map(|table| {
            let name = table["table"].as_str().unwrap().to_owned();
            table["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |record| {
                    (
                        name.clone(),
                        record["id"].as_str().unwrap().to_owned(),
                        record["seq"].as_u64().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Pulled {
        records,
        next_cursor: batch["next_cursor"].as_u64().expect("next_cursor"),
        took: started.elapsed(),
    }
}

struct Pulled {
    /// (table, id, seq)
    records: Vec<(String, String, u64)>,
    next_cursor: u64,
    took: Duration,
}

/// One server-sent event, or a comment line.
#[derive(Debug, Clone, PartialEq)]
enum Sse {
    Event {
        kind: String,
        id: Option<u64>,
        data: Value,
    },
    Comment(String),
}

impl Sse {
    fn change(&self) -> Option<&Value> {
        match self {
            Sse::Event { kind, data, .. } if kind == "change" => Some(data),
            _ => None,
        }
    }
}

struct Events {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    /// The next event or comment; `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                return Some(parse_frame(frame.trim_end()));
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next())
                .await
                .expect("the stream stalled")?;
            let chunk = chunk.ok()?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Change events until `done` says enough; panics when the stream ends.
    async fn changes_until(&mut self, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut changes = Vec::new();
        while !done(&changes) {
            let event = self.next().await.expect("the stream ended early");
            if let Sse::Event { kind, id, data } = &event {
                assert_ne!(kind, "error", "{data}");
                if let Some(change) = event.change() {
                    assert_eq!(*id, change["seq"].as_u64(), "id is the seq: {change}");
                    changes.push(change.clone());
                }
            }
        }
        changes
    }
}

fn parse_frame(frame: &str) -> Sse {
    if let Some(comment) = frame.strip_prefix(':') {
        assert!(!comment.contains('\n'), "one comment line: {frame:?}");
        return Sse::Comment(comment.trim().to_owned());
    }
    let (mut kind, mut id, mut data) = ("message".to_owned(), None, String::new());
    for line in frame.lines() {
        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
        match field {
            "event" => kind = value.to_owned(),
            "id" => id = Some(value.parse().expect("numeric id")),
            "data" => data.push_str(value),
            other => panic!("unknown field {other:?} in {frame:?}"),
        }
    }
    Sse::Event {
        kind,
        id,
        data: serde_json::from_str(&data).expect("JSON data"),
    }
}

fn seqs(changes: &[Value]) -> Vec<u64> {
    changes
        .iter()
        .map(|change| change["seq"].as_u64().expect("seq"))
        .collect()
}

#[track_caller]
fn assert_strictly_increasing(seqs: &[u64]) {
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "not strictly increasing: {seqs:?}"
    );
}

// ---------------------------------------------------------------------------
// Long-poll pulls
// ---------------------------------------------------------------------------

/// (a) A long poll waiting when a write is made answers with that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_the_write_made_while_it_waits() {
    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let cursor = server.latest_seq().await;
    let poll = {
        let (client, url, auth) = (server.client.clone(), server.url(""), alice.clone());
        tokio::spawn(async move {
            let server = Server::attach(client, url);
            server.pull(&auth, &["notes"], cursor, Some(30_000)).await
        })
    };
    // Give the poll time to reach its wait; whether it did or not, it has
    // nothing to answer yet, so it must still be waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll answered before any write");
    let seq = server
        .create(&alice, "notes", json!({"id": "a1", "text": "hello"}))
        .await;
    let pulled = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll answered")
        .expect("poll task");
    assert_eq!(
        pulled.records,
        vec![("notes".to_owned(), "a1".to_owned(), seq)]
    );
    assert_eq!(pulled.next_cursor, seq);
    assert!(server.metric("msdb_long_polls_total").await >= 1.0);
    server.handle.shutdown().await;
}

/// (b) With no change, a long poll answers empty once its wait is up, cut to
/// `live.max_wait_ms`, and a wait longer than `server.request_timeout` is not
/// cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_without_changes_answers_empty_after_its_wait() {
    let server = Server::start(|config| {
        config.server.request_timeout = Duration::from_secs(1);
        config.live.max_wait_ms = 1_500;
    })
    .await;
    let alice = server.token("alice", "phone-a");
    let cursor = server.latest_seq().await;

    let pulled = server.pull(&alice, &["notes"], cursor, Some(300)).await;
    assert!(pulled.records.is_empty(), "{:?}", pulled.records);
    assert_eq!(pulled.next_cursor, cursor);
    assert!(
        pulled.took >= Duration::from_millis(300),
        "{:?}",
        pulled.took
    );

    // Asked for ten minutes: cut to max_wait_ms (1.5 s), which is longer
    // than the request timeout (1 s) but answered, not timed out.
    let pulled = server.pull(&alice, &["notes"], cursor, Some(600_000)).await;
    assert!(pulled.records.is_empty());
    assert!(
        pulled.took >= Duration::from_millis(1_500),
        "{:?}",
        pulled.took
    );
    assert!(pulled.took < PATIENCE, "{:?}", pulled.took);

    // A pull with records answers at once, wait or not; wait_ms=0 is a plain pull.
    let seq = server
        .create(&alice, "notes", json!({"id": "a1", "text": "x"}))
        .await;
    let pulled = server.pull(&alice, &["notes"], cursor, Some(600_000)).await;
    assert_eq!(pulled.records.len(), 1);
    let pulled = server.pull(&alice, &["notes"], seq, Some(0)).await;
    assert!(pulled.records.is_empty());
    server.handle.shutdown().await;
}

/// (c) Changes the caller does not get (someone else's rows, another table)
/// neither end its wait nor reach it; its own change does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_is_not_woken_with_data_it_may_not_see() {
    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let bob = server.token("bob", "phone-b");
    let cursor = server.latest_seq().await;
    let poll = {
        let (client, url, auth) = (server.client.clone(), server.url(""), alice.clone());
        tokio::spawn(async move {
            let server = Server::attach(client, url);
            server.pull(&auth, &["notes"], cursor, Some(30_000)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..5 {
        server
            .create(
                &bob,
                "notes",
                json!({"id": format!("b{n}"), "text": "bob's"}),
            )
            .await;
        server
            .create(
                &admin(),
                "logs",
                json!({"id": format!("l{n}"), "text": "log"}),
            )
            .await;
        server
            .create(
                &bob,
                "tasks",
                json!({"id": format!("t{n}"), "text": "task"}),
            )
            .await;
    }
    // Those writes woke the poll several times; it must still be waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the poll answered on changes it does not get"
    );
    let seq = server
        .create(&alice, "notes", json!({"id": "a1", "text": "mine"}))
        .await;
    let pulled = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll answered")
        .expect("poll task");
    assert_eq!(
        pulled.records,
        vec![("notes".to_owned(), "a1".to_owned(), seq)]
    );
    server.handle.shutdown().await;
}

/// The binary protocol long-polls the same way (`?wait_ms=` on the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_long_poll_returns_the_write_made_while_it_waits() {
    use mobilesyncdb::sync::wire::MessageKind;
    use mobilesyncdb::sync::{PullRequest, WireScope, decode_pull_response, encode_request};

    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let cursor = server.latest_seq().await;
    let request = PullRequest {
        cursor,
        tables: vec![WireScope::all("notes")],
        ..PullRequest::default()
    };
    let poll = server
        .client
        .post(server.url("/v1/sync/pull?wait_ms=30000"))
        .header("authorization", &alice)
        .header("content-type", mobilesyncdb::api::SYNC_CONTENT_TYPE)
        .body(encode_request(MessageKind::PullRequest, &request))
        .timeout(PATIENCE)
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll answered before any write");
    let seq = server
        .create(&alice, "notes", json!({"id": "a1", "text": "hello"}))
        .await;
    let answer = poll.await.expect("poll task").expect("poll answered");
    assert_eq!(answer.status(), StatusCode::OK);
    let bytes = answer.bytes().await.expect("body");
    let batch = decode_pull_response(&bytes, 64 << 20).expect("a batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.next_cursor, seq);
    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// The change stream
// ---------------------------------------------------------------------------

/// (d) Every write to the tables asked for is announced exactly once, in
/// sequence order, while three writers write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_announces_every_change_once_in_order() {
    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let cursor = server.latest_seq().await;
    let mut events = server
        .stream(&alice, &format!("tables=tasks,notes&cursor={cursor}"), None)
        .await
        .expect("stream");
    assert_eq!(server.metric("msdb_change_streams_open").await, 1.0);

    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let client = server.client.clone();
            let url = server.url("");
            let token = server.token(&format!("w{writer}"), &format!("dev-{writer}"));
            tokio::spawn(async move {
                let server = Server::attach(client, url);
                let mut seen = Vec::new();
                for n in 0..100 {
                    let id = format!("w{writer}-{n}");
                    let seq = server
                        .create(&token, "tasks", json!({"id": id, "text": "t"}))
                        .await;
                    seen.push((seq, id));
                    if n % 10 == 0 {
                        // A table the stream did not ask for.
                        server
                            .create(&admin(), "logs", json!({"id": format!("{writer}-{n}")}))
                            .await;
                    }
                }
                seen
            })
        })
        .collect();
    let mut written = BTreeMap::new();
    for writer in writers {
        written.extend(writer.await.expect("writer"));
    }
    assert_eq!(written.len(), 300);
    let last = *written.keys().next_back().unwrap();
    let changes = events
        .changes_until(|changes| {
            changes
                .last()
                .is_some_and(|change| change["seq"].as_u64() >= Some(last))
        })
        .await;
    let announced = seqs(&changes);
    assert_strictly_increasing(&announced);
    assert_eq!(
        announced,
        written.keys().copied().collect::<Vec<_>>(),
        "every write announced exactly once"
    );
    for change in &changes {
        let seq = change["seq"].as_u64().unwrap();
        assert_eq!(change["table"], "tasks");
        assert_eq!(change["id"].as_str(), Some(written[&seq].as_str()));
        assert_eq!(change["deleted"], false);
    }
    drop(events);
    server.handle.shutdown().await;
}

/// (e) Under an `owner` rule a user's stream shows only the user's records; a
/// record that leaves the user's reach is announced without its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_never_shows_other_users_records() {
    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let bob = server.token("bob", "phone-b");
    let cursor = server.latest_seq().await;
    let mut events = server
        .stream(&alice, &format!("tables=notes&cursor={cursor}"), None)
        .await
        .expect("stream");
    let mut alices = Vec::new();
    for n in 0..20 {
        server
            .create(
                &bob,
                "notes",
                json!({"id": format!("b{n}"), "text": "bob's"}),
            )
            .await;
        alices.push(
            server
                .create(
                    &alice,
                    "notes",
                    json!({"id": format!("a{n}"), "text": "alice's"}),
                )
                .await,
        );
        // Bob edits his own note: alice must not hear of it either.
        server
            .patch("notes", &format!("b{n}"), json!({"text": "edited"}))
            .await;
    }
    // Alice's a0 is given to bob: alice hears that something left, not what.
    let given = server.patch("notes", "a0", json!({"owner": "bob"})).await;
    let changes = events
        .changes_until(|changes| {
            changes
                .last()
                .is_some_and(|change| change["seq"].as_u64() >= Some(given))
        })
        .await;
    assert_strictly_increasing(&seqs(&changes));
    let (left, visible): (Vec<&Value>, Vec<&Value>) =
        changes.iter().partition(|change| change["left"] == true);
    let ids: Vec<&str> = visible
        .iter()
        .map(|change| change["id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.iter().all(|id| id.starts_with('a')),
        "bob's records reached alice: {ids:?}"
    );
    // a0 was listed at its insert before it moved; the others are all there.
    let visible_seqs: BTreeSet<u64> = visible
        .iter()
        .map(|change| change["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(visible_seqs, alices.iter().copied().collect());
    // Something left alice's reach at a0's move. (The engine cannot tell a
    // record alice may hold from one she never saw once it is out of her
    // reach, so bob's edits of his older notes are hinted too: never with
    // an id.)
    assert!(
        left.iter().all(|change| change.get("id").is_none()),
        "{left:?}"
    );
    assert_eq!(left.last().unwrap()["seq"].as_u64(), Some(given));
    let text = serde_json::to_string(&changes).unwrap();
    assert!(!text.contains("\"b"), "{text}");
    drop(events);
    server.handle.shutdown().await;
}

/// (f) An idle stream sends heartbeat comments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_sends_heartbeats() {
    let server = Server::start(|config| config.live.heartbeat_ms = 100).await;
    let mut events = server
        .stream(&admin(), "tables=notes", None)
        .await
        .expect("stream");
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match events.next().await.expect("the stream ended") {
            Sse::Comment(comment) => {
                assert_eq!(comment, "heartbeat");
                heartbeats += 1;
            }
            other => panic!("nothing changed, yet {other:?}"),
        }
    }
    drop(events);
    server.handle.shutdown().await;
}

/// (g) Subscribers beyond `live.max_subscribers` get 503 with `Retry-After`;
/// a slot freed by a closed stream is taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_beyond_the_bound_get_503_until_a_slot_frees() {
    let server = Server::start(|config| {
        config.live.max_subscribers = 2;
        config.live.heartbeat_ms = 100;
    })
    .await;
    let first = server
        .stream(&admin(), "tables=notes", None)
        .await
        .expect("first");
    let _second = server
        .stream(&admin(), "tables=notes", None)
        .await
        .expect("second");
    let Err(refused) = server.stream(&admin(), "tables=notes", None).await else {
        panic!("a third stream was taken");
    };
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let kind = refused.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("application/problem+json"), "{kind}");
    let problem: Value =
        serde_json::from_str(&refused.text().await.expect("body")).expect("problem");
    assert_eq!(problem["code"], "too_many_subscribers");
    assert_eq!(problem["status"], 503);

    // The first subscriber leaves: its slot comes back once the server sees
    // the connection gone (at its next heartbeat at the latest).
    drop(first);
    let started = Instant::now();
    let third = loop {
        match server.stream(&admin(), "tables=notes", None).await {
            Ok(events) => break events,
            Err(refused) => {
                assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert!(started.elapsed() < PATIENCE, "the slot never came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    drop(third);
    server.handle.shutdown().await;
}

/// (h) A stream resumed with `Last-Event-ID` misses nothing and repeats
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_stream_misses_nothing() {
    let server = Server::start(|_| {}).await;
    let cursor = server.latest_seq().await;
    let mut written = Vec::new();
    for n in 0..20 {
        written.push(
            server
                .create(
                    &admin(),
                    "tasks",
                    json!({"id": format!("t{n}"), "text": "x"}),
                )
                .await,
        );
    }
    let mut events = server
        .stream(&admin(), &format!("tables=tasks&cursor={cursor}"), None)
        .await
        .expect("stream");
    let first = events.changes_until(|changes| changes.len() >= 10).await;
    drop(events);
    let last_id = first.last().unwrap()["seq"].as_u64().unwrap();
    for n in 20..40 {
        written.push(
            server
                .create(
                    &admin(),
                    "tasks",
                    json!({"id": format!("t{n}"), "text": "x"}),
                )
                .await,
        );
    }
    let end = *written.last().unwrap();
    // `cursor=0` in the URL loses to the header, as when a browser reconnects.
    let mut events = server
        .stream(&admin(), "tables=tasks&cursor=0", Some(last_id))
        .await
        .expect("resumed stream");
    let second = events
        .changes_until(|changes| {
            changes
                .last()
                .is_some_and(|change| change["seq"].as_u64() >= Some(end))
        })
        .await;
    let mut all = seqs(&first);
    all.extend(seqs(&second));
    assert_strictly_increasing(&all);
    assert_eq!(all, written);
    drop(events);
    server.handle.shutdown().await;
}

/// A cursor the server never reached gets an `event: reset`, then the stream
/// goes on from the latest change; bad requests are refused as problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resets_unservable_cursors_and_refuses_bad_requests() {
    let server = Server::start(|_| {}).await;
    let alice = server.token("alice", "phone-a");
    let latest = server.latest_seq().await;
    let mut events = server
        .stream(&admin(), "tables=tasks", Some(latest + 1_000))
        .await
        .expect("stream");
    match events.next().await.expect("an event") {
        Sse::Event { kind, id, data } => {
            assert_eq!(kind, "reset");
            assert_eq!(data["reason"], "cursor_ahead");
            assert_eq!(id, Some(latest));
        }
        other => panic!("{other:?}"),
    }
    let seq = server
        .create(&admin(), "tasks", json!({"id": "t1", "text": "x"}))
        .await;
    let changes = events.changes_until(|changes| !changes.is_empty()).await;
    assert_eq!(seqs(&changes), vec![seq]);
    drop(events);

    for (auth, query, status, code) in [
        (admin(), "tables=", 400, "no_tables"),
        (admin(), "tables=nope", 404, "unknown_table"),
        // A table without a rule is the admins' only.
        (alice.clone(), "tables=logs", 404, "unknown_table"),
        (admin(), "tables=tasks&bogus=1", 400, "bad_query_string"),
    ] {
        let Err(refused) = server.stream(&auth, query, None).await else {
            panic!("{query} was streamed");
        };
        assert_eq!(refused.status().as_u16(), status, "{query}");
        let problem: Value =
            serde_json::from_str(&refused.text().await.expect("body")).expect("problem");
        assert_eq!(problem["code"], code, "{query}");
    }
    let refused = server
        .client
        .get(server.url("/v1/sync/stream?tables=tasks"))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    server.handle.shutdown().await;
}

/// A cursor older than the change log's horizon gets an `event: reset` (pull
/// to catch up), then the stream goes on after the latest change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_resets_a_cursor_older_than_the_log() {
    let server = Server::start(|config| {
        config.engine.retention.max_entries = 5;
        config.engine.retention.min_entries = 1;
    })
    .await;
    let cursor = server.latest_seq().await;
    for n in 0..20 {
        server
            .create(
                &admin(),
                "tasks",
                json!({"id": format!("t{n}"), "text": "x"}),
            )
            .await;
    }
    let latest = server.latest_seq().await;
    let mut events = server
        .stream(&admin(), &format!("tables=tasks&cursor={cursor}"), None)
        .await
        .expect("stream");
    match events.next().await.expect("an event") {
        Sse::Event { kind, id, data } => {
            assert_eq!(kind, "reset", "{data}");
            assert_eq!(data["reason"], "cursor_too_old");
            assert_eq!(data["cursor"].as_u64(), Some(cursor));
            assert!(data["horizon"].as_u64().unwrap() > cursor, "{data}");
            assert_eq!(id, Some(latest));
        }
        other => panic!("{other:?}"),
    }
    let seq = server
        .create(&admin(), "tasks", json!({"id": "after", "text": "x"}))
        .await;
    let changes = events.changes_until(|changes| !changes.is_empty()).await;
    assert_eq!(seqs(&changes), vec![seq]);
    drop(events);
    server.handle.shutdown().await;
}

/// Shutdown ends open streams and waiting long polls at once instead of
/// waiting out `server.shutdown_grace` for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_long_polls() {
    let server = Server::start(|config| {
        config.server.shutdown_grace = Duration::from_secs(120);
    })
    .await;
    let alice = server.token("alice", "phone-a");
    let cursor = server.latest_seq().await;
    let mut events = server
        .stream(&alice, "tables=notes", None)
        .await
        .expect("stream");
    let poll = {
        let (client, url, auth) = (server.client.clone(), server.url(""), alice.clone());
        tokio::spawn(async move {
            let server = Server::attach(client, url);
            server.pull(&auth, &["notes"], cursor, Some(30_000)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(PATIENCE, server.handle.shutdown())
        .await
        .expect("shutdown waited out its grace for a stream");
    assert!(started.elapsed() < PATIENCE);
    // The stream ended (no more events), and the poll was answered, empty.
    while let Some(event) = events.next().await {
        assert!(matches!(event, Sse::Comment(_)), "{event:?}");
    }
    let pulled = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll answered")
        .expect("poll task");
    assert!(pulled.records.is_empty());
}

impl Server {
    /// A view of a running server for a spawned task: its URL and a client.
    /// Only the request helpers work on it (no handle).
    fn attach(client: reqwest::Client, url: String) -> Attached {
        Attached { client, url }
    }
}

/// A running server seen from a spawned task.
struct Attached {
    client: reqwest::Client,
    url: String,
}

impl Attached {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    async fn pull(&self, auth: &str, tables: &[&str], cursor: u64, wait_ms: Option<u64>) -> Pulled {
        pull_with(&self.client, &self.url(""), auth, tables, cursor, wait_ms).await
    }

    async fn create(&self, auth: &str, table: &str, fields: Value) -> u64 {
        create_with(&self.client, &self.url(""), auth, table, fields).await
    }
}

/// Power profiles over HTTP: a JSON pull states its power state and network,
/// and gets the mode's hint and deferrals; a long poll named in the body
/// waits like one named in the query, except in low power, where it is
/// answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_pull_is_served_by_its_power_profile() {
    let server = Server::start(|config| {
        config.sync.power.low_priority_tables = vec!["logs".to_owned()];
    })
    .await;
    let seq = server
        .create(&admin(), "tasks", json!({"id": "t1", "text": "buy milk"}))
        .await;
    server
        .create(&admin(), "logs", json!({"id": "l1", "text": "opened"}))
        .await;
    let pull = |mut body: Value| {
        let (client, url) = (server.client.clone(), server.url("/v1/sync/pull"));
        body["device"] = json!("phone-1");
        async move {
            let answer = client
                .post(url)
                .header("authorization", admin())
                .header("content-type", "application/json")
                .body(body.to_string())
                .timeout(PATIENCE)
                .send()
                .await
                .expect("pull sent");
            let status = answer.status();
            let text = answer.text().await.expect("body");
            assert_eq!(status, StatusCode::OK, "{text}");
            serde_json::from_str::<Value>(&text).expect("JSON")
        }
    };
    let low = pull(
        json!({"tables": ["tasks", "logs"], "cursor": 0, "profile": "low", "network": "metered"}),
    )
    .await;
    assert_eq!(low["tables"][0]["records"][0]["id"], "t1");
    assert_eq!(low["tables"].as_array().map(Vec::len), Some(1));
    assert_eq!(low["deferred"], json!([{"table": "logs", "id": "l1"}]));
    assert_eq!(
        low["hint"],
        json!({"mode": "low", "next_sync_ms": 10_800_000, "long_poll_ms": 0})
    );
    let cursor = low["next_cursor"].as_u64().expect("cursor");
    assert!(cursor >= seq);

    // Low: a minute's wait in the body is answered at once, empty.
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        pull(json!({"tables": ["tasks"], "cursor": cursor, "profile": "low", "wait_ms": 60_000})),
    )
    .await
    .expect("answered at once, not after the minute");
    assert_eq!(waited["tables"], json!([]));

    // Normal: the body's wait holds the pull until a change comes.
    let poll = tokio::spawn(pull(
        json!({"tables": ["tasks"], "cursor": cursor, "profile": "normal", "wait_ms": 30_000}),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll answered before any write");
    server
        .create(&admin(), "tasks", json!({"id": "t2", "text": "call"}))
        .await;
    let answered = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll answered")
        .expect("poll task");
    assert_eq!(answered["tables"][0]["records"][0]["id"], "t2");

    let bad = server
        .client
        .post(server.url("/v1/sync/pull"))
        .header("authorization", admin())
        .header("content-type", "application/json")
        .body(json!({"device": "phone-1", "tables": ["tasks"], "profile": "sleepy"}).to_string())
        .send()
        .await
        .expect("pull sent");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let problem: Value = serde_json::from_str(&bad.text().await.expect("body")).expect("JSON");
    assert_eq!(problem["code"], "bad_profile");
    server.handle.shutdown().await;
}
