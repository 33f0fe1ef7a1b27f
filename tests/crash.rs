//! Crash harness: acknowledged writes survive `kill -9`.
//!
//! The real `mobilesyncdb serve` binary runs on a fresh data directory with
//! `storage.fsync = "always"`. Each round, REST writers and phones (the
//! reference [`Client`] over [`HttpTransport`]) write concurrently; after a
//! seeded random delay the server is killed with SIGKILL, restarted on the same
//! directory (sometimes killed again while it recovers), and checked before
//! anyone writes again:
//!
//! - **Nothing acknowledged is lost.** Each writer owns its records and writes
//!   each sequentially, numbering the writes `n = 1, 2, …`; a write whose 2xx
//!   arrived is acknowledged, one that failed on the way may or may not have
//!   applied, one refused with a definite 404/409 did not. After a restart a
//!   record must show the acknowledged write or a later attempted one (absent
//!   only if nothing was acknowledged or a delete may have applied). A phone's
//!   writes are acknowledged once a push returned with the queue empty.
//! - **Nothing is half applied.** Every write sets `n`, `check` and `pad`
//!   together; `check` and `pad` are functions of the id and `n`, so a visible
//!   row (on the server or on a phone) whose fields disagree was torn.
//! - **Sequence numbers are the same and continue.** A record still at its
//!   acknowledged write has the `ETag` (its sequence number) that write
//!   returned; the server's latest sequence number is at least every
//!   acknowledged one and every phone's cursor; writes after a restart get
//!   sequence numbers above the latest one before it.
//! - **Pulls serve only durable changes, sessions survive.** A row a phone
//!   pulled is on the server after the restart at that write or a later one;
//!   each device's session keeps at least the cursor its last successful
//!   acknowledgement stored; the first pull after a restart is incremental: at
//!   most one record per sequence number after the phone's cursor, plus the
//!   records the phone itself asks for whole (its `fetch` list, and pending
//!   records whose echo may have come while their op was still queued); once
//!   it has pulled everything, with nobody writing, it holds exactly the
//!   server's rows apart from its own unpushed edits (a cursor never passed a
//!   change the phone did not get).
//! - **Phones converge.** At the end every phone pushes its queue and pulls
//!   until nothing is left; each phone's rows equal the server's exactly, and
//!   each session holds its phone's cursor.
//!
//! The run prints the seed first and a summary line last:
//! `crash harness: seed=S rounds=R acknowledged_writes=N lost=0 half_applied=0 …`.
//! Replay or lengthen a run with `MSDB_CRASH_SEED` and `MSDB_CRASH_ROUNDS`:
//!
//! ```sh
//! cargo test --test crash -- --nocapture
//! MSDB_CRASH_ROUNDS=200 cargo test --release --test crash -- --nocapture
//! MSDB_CRASH_SEED=1234 MSDB_CRASH_ROUNDS=20 cargo test --test crash -- --nocapture
//! ```
//!
//! The scratch directory (data directory and one log file per server start) is
//! removed after a passing run and kept, with its path printed, after a failing
//! one. The harness asserts behaviour only: the delays are there to vary where
//! the kill lands, never to judge speed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mobilesyncdb::client::{
    Client, ClientConfig, ClientError, HttpTransport, LocalRow, PullReport, RetryPolicy,
};
use mobilesyncdb::config::DEV_ADMIN_KEY;
use mobilesyncdb::crdt::Value;
use mobilesyncdb::schema::{Fields, value_to_json};
use mobilesyncdb::sync::WireScope;
use reqwest::Method;
use serde_json::{Value as Json, json};

type Row = serde_json::Map<String, Json>;

const TABLE: &str = "items";
const REST_WRITERS: usize = 4;
const PHONES: usize = 3;
const DEFAULT_SEED: u64 = 20_240_917;
const DEFAULT_ROUNDS: u64 = 6;
/// The kill lands this long after the writers start, chosen per round.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 100..=800;
/// Percent of restarts that are first killed again while recovering.
const EARLY_KILL_PERCENT: u8 = 15;
/// The smallest snapshot threshold the server accepts, so that rounds also
/// crash around snapshots, not only around journal appends.
const SNAPSHOT_AFTER_BYTES: u64 = 64 << 10;
/// A guard against a server that never comes up (not a timing assertion).
const START_GIVE_UP: Duration = Duration::from_secs(120);
/// At most this many violations of each kind are printed one by one.
const PRINTED_VIOLATIONS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9() {
    let seed = setting("MSDB_CRASH_SEED", DEFAULT_SEED);
    let rounds = setting("MSDB_CRASH_ROUNDS", DEFAULT_ROUNDS);
    println!(
        "crash harness: seed={seed} rounds={rounds} (replay with MSDB_CRASH_SEED={seed} MSDB_CRASH_ROUNDS={rounds})"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let scratch = Scratch::new(seed);
    let mut servers = ServerSpec::new(&scratch.root, free_port());
    let tally = Arc::new(Mutex::new(Tally::default()));

    let mut server = servers.spawn();
    let mut http = Http::new(&servers.url());
    let mut latest_seq = wait_until_up(&mut server, &http).await;
    create_table(&http).await;
    let mut writers = Vec::new();
    for index in 0..REST_WRITERS {
        let token = mint_token(&http, &format!("rest-{index}")).await;
        writers.push(RestWriter::new(index, token, rng.u64(..)));
    }
    let mut phones = Vec::new();
    for index in 0..PHONES {
        let token = mint_token(&http, &format!("phone-{index}")).await;
        let phone = Phone::new(index, &servers.url(), &token, rng.u64(..));
        phone.client.pull_all().await.expect("initial pull");
        phones.push(phone);
    }

    let mut kills = 0;
    let mut early_kills = 0;
    let mut intact = true;
    for round in 1..=rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writer_tasks: Vec<_> = writers
            .drain(..)
            .map(|writer| {
                tokio::spawn(writer.run(
                    http.clone(),
                    Arc::clone(&tally),
                    Arc::clone(&stop),
                    latest_seq,
                ))
            })
            .collect();
        let phone_tasks: Vec<_> = phones
            .drain(..)
            .map(|phone| tokio::spawn(phone.run(Arc::clone(&tally), Arc::clone(&stop))))
            .collect();

        tokio::time::sleep(Duration::from_millis(rng.u64(KILL_AFTER_MS))).await;
        if let Some(status) = server.kill() {
            lock(&tally).violation(
                Kind::Other,
                format!(
                    "round {round}: the server exited on its own ({status}) before the kill; log {}:\n{}",
                    server.log.display(),
                    log_tail(&server.log)
                ),
            );
        }
        kills += 1;
        stop.store(true, Ordering::SeqCst);
        for task in writer_tasks {
            writers.push(task.await.expect("writer task"));
        }
        for task in phone_tasks {
            phones.push(task.await.expect("phone task"));
        }

        if rng.u8(..100) < EARLY_KILL_PERCENT {
            // Killed again while it opens the data directory and recovers.
            let mut recovering = servers.spawn();
            tokio::time::sleep(Duration::from_millis(rng.u64(0..=60))).await;
            recovering.kill();
            early_kills += 1;
        }
        server = servers.spawn();
        // A fresh connection pool: the old one holds connections to the dead server.
        http = Http::new(&servers.url());
        latest_seq = wait_until_up(&mut server, &http).await;
        let label = format!("round {round}");
        if !verify(&http, &mut writers, &phones, &tally, &label, latest_seq).await {
            // Without its table nothing more can be checked.
            intact = false;
            break;
        }
        resume_incrementally(&http, &mut phones, &tally, &label, latest_seq).await;
    }

    if intact {
        converge(&mut phones, &tally).await;
        let latest_seq = health(&http).await.expect("health after convergence");
        verify(&http, &mut writers, &phones, &tally, "final", latest_seq).await;
        compare_replicas(&http, &phones, &tally).await;
    }
    server.kill();

    let tally = lock(&tally);
    let acknowledged = tally.rest_acked + tally.pushed_acked;
    println!(
        "crash harness: {kills} kills ({early_kills} more during recovery), {} REST writes and {} phone writes acknowledged, {} answers other than 2xx/404/409",
        tally.rest_acked, tally.pushed_acked, tally.odd_statuses
    );
    println!(
        "crash harness: seed={seed} rounds={rounds} acknowledged_writes={acknowledged} lost={} half_applied={} served_then_lost={} other_violations={}",
        tally.count(Kind::Lost),
        tally.count(Kind::HalfApplied),
        tally.count(Kind::ServedThenLost),
        tally.count(Kind::Other),
    );
    assert!(
        acknowledged > 0,
        "no write was acknowledged: nothing was tested"
    );
    assert_eq!(tally.count(Kind::Lost), 0, "acknowledged writes were lost");
    assert_eq!(tally.count(Kind::HalfApplied), 0, "half-applied rows");
    assert_eq!(
        tally.count(Kind::ServedThenLost),
        0,
        "pulled changes were lost"
    );
    assert_eq!(tally.count(Kind::Other), 0, "other violations (see above)");
}

/// A number from the environment, or its default.
fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} is not a number")),
        Err(_) => default,
    }
}

/// A loopback port free right now, kept for every restart of the run, so the
/// phones keep their transport (and their replica) across crashes.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------
// What was checked and what broke.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An acknowledged write (or a pushed phone write) is not on the server.
    Lost,
    /// A visible row whose fields were not written together.
    HalfApplied,
    /// A row a phone pulled is not on the server after the restart.
    ServedThenLost,
    /// Sequence numbers, sessions, convergence, a server that died alone.
    Other,
}

#[derive(Debug, Default)]
struct Tally {
    rest_acked: u64,
    pushed_acked: u64,
    /// The highest sequence number a REST write's `ETag` reported.
    max_acked_seq: u64,
    /// Answers that were neither 2xx nor a definite 404/409 refusal.
    odd_statuses: u64,
    violations: Vec<(Kind, String)>,
}

impl Tally {
    fn violation(&mut self, kind: Kind, detail: String) {
        if self.count(kind) < PRINTED_VIOLATIONS {
            eprintln!("crash harness: {kind:?}: {detail}");
        }
        self.violations.push((kind, detail));
    }

    fn count(&self, kind: Kind) -> usize {
        self.violations
            .iter()
            .filter(|(found, _)| *found == kind)
            .count()
    }
}

fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Rows: what a write sets, and whether a visible row is whole.

fn fnv(id: &str, n: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes().chain(n.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The `check` field of write `n` of record `id`.
fn check_of(id: &str, n: u64) -> String {
    format!("{id}#{n}#{:016x}", fnv(id, n))
}

/// The `pad` field of write `n` of record `id`: 16 to 400 letters, so writes
/// differ in size.
fn pad_of(id: &str, n: u64) -> String {
    let hash = fnv(id, n);
    let length = 16 + (hash % 385) as usize;
    (0..length)
        .map(|at| char::from(b'a' + ((hash >> (at % 48)) as u8).wrapping_add(at as u8) % 26))
        .collect()
}

/// Who writes record `id`: `w2-…` is `rest-2`, `p1-…` is `phone-1`.
fn writer_of(id: &str) -> Option<String> {
    let (prefix, _) = id.split_once('-')?;
    let index: usize = prefix.get(1..)?.parse().ok()?;
    match prefix.as_bytes().first()? {
        b'w' => Some(format!("rest-{index}")),
        b'p' => Some(format!("phone-{index}")),
        _ => None,
    }
}

/// The fields write `n` of record `id` sets.
fn changed_fields(id: &str, n: u64) -> Row {
    let mut row = Row::new();
    row.insert("n".into(), json!(n));
    row.insert("check".into(), json!(check_of(id, n)));
    row.insert("pad".into(), json!(pad_of(id, n)));
    row
}

/// Every field of record `id` at write `n`.
fn full_row(id: &str, n: u64) -> Row {
    let mut row = changed_fields(id, n);
    row.insert("id".into(), json!(id));
    row.insert("writer".into(), json!(writer_of(id)));
    row
}

/// The write a visible row shows, if its fields belong together.
fn whole_row(id: &str, row: &Row) -> Result<u64, String> {
    let n = row
        .get("n")
        .and_then(Json::as_u64)
        .ok_or_else(|| format!("record `{id}`: no `n` in {}", brief(row)))?;
    if *row == full_row(id, n) {
        Ok(n)
    } else {
        Err(format!(
            "record `{id}` shows n={n} but its fields are not write {n}'s: {}",
            brief(row)
        ))
    }
}

/// A row for a message, with `pad` shortened.
fn brief(row: &Row) -> String {
    let mut shown = row.clone();
    if let Some(Json::String(pad)) = shown.get_mut("pad")
        && pad.len() > 12
    {
        *pad = format!("{}…({} chars)", &pad[..12], pad.len());
    }
    Json::Object(shown).to_string()
}

/// A phone's row as the server's JSON shows it.
fn local_json(row: &LocalRow) -> Row {
    row.iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.clone(), value_to_json(value)))
        .collect()
}

fn json_fields(row: &Row) -> Fields {
    row.iter()
        .map(|(name, value)| {
            let value = match value {
                Json::Number(number) => Value::Int(number.as_i64().expect("an integer field")),
                Json::String(text) => Value::str(text.as_str()),
                other => panic!("unexpected field value {other}"),
            };
            (name.clone(), value)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The server process.

/// The scratch directory of one run: removed when the run passes, kept (and
/// named) when it fails.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(seed: u64) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let root =
            std::env::temp_dir().join(format!("msdb-crash-{}-{seed}-{nanos}", std::process::id()));
        std::fs::create_dir_all(root.join("data")).expect("create the scratch directory");
        Scratch { root }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash harness: kept the data directory and server logs in {}",
                self.root.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// How to start the server: always on the same data directory and port.
struct ServerSpec {
    data_dir: PathBuf,
    logs: PathBuf,
    port: u16,
    starts: usize,
}

impl ServerSpec {
    fn new(root: &Path, port: u16) -> ServerSpec {
        ServerSpec {
            data_dir: root.join("data"),
            logs: root.to_owned(),
            port,
            starts: 0,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `mobilesyncdb serve`, its output going to a log file of its own.
    fn spawn(&mut self) -> Server {
        let log = self.logs.join(format!("server-{:03}.log", self.starts));
        self.starts += 1;
        let output = File::create(&log).expect("create a server log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mobilesyncdb"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--set", "storage.fsync=\"always\""])
            .arg("--set")
            .arg(format!(
                "storage.snapshot_after_bytes={SNAPSHOT_AFTER_BYTES}"
            ))
            .args(["--set", &format!("access.{TABLE}={{kind=\"shared\"}}")])
            // The writers are quick: no 429s.
            .args(["--set", "limits.requests_per_second=1000000"])
            .args(["--set", "limits.burst=1000000"])
            .env("RUST_LOG", "mobilesyncdb=info,warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file handle"))
            .stderr(output);
        // Settings of the test's own environment must not reach the server.
        for (name, _) in std::env::vars() {
            if name.starts_with("MSDB_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().expect("start mobilesyncdb serve");
        Server { child, log }
    }
}

struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// SIGKILL. Returns the exit status when the server had already exited on
    /// its own.
    fn kill(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits until `/health` answers; its latest sequence number.
async fn wait_until_up(server: &mut Server, http: &Http) -> u64 {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "the server exited ({status}) instead of starting; log {}:\n{}",
                server.log.display(),
                log_tail(&server.log)
            );
        }
        if let Some(latest_seq) = health(http).await {
            return latest_seq;
        }
        assert!(
            started.elapsed() < START_GIVE_UP,
            "the server did not answer /health in {START_GIVE_UP:?}; log {}:\n{}",
            server.log.display(),
            log_tail(&server.log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// HTTP.

/// An answer: its status, its `ETag` as a number, its JSON body (or null).
struct Answer {
    status: u16,
    etag: Option<u64>,
    body: Json,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Http {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        Http {
            client,
            base: base.to_owned(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Json>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim_matches('"').parse().ok());
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        Ok(Answer { status, etag, body })
    }

    /// An admin request that must succeed.
    async fn admin(&self, method: Method, path: &str, body: Option<&Json>) -> Answer {
        let answer = self
            .send(method.clone(), path, DEV_ADMIN_KEY, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        assert!(
            answer.ok(),
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        answer
    }
}

async fn health(http: &Http) -> Option<u64> {
    let answer = http
        .send(Method::GET, "/health", DEV_ADMIN_KEY, None)
        .await
        .ok()?;
    answer
        .ok()
        .then(|| answer.body["latest_seq"].as_u64())
        .flatten()
}

async fn create_table(http: &Http) {
    let definition = json!({
        "primary_key": "id",
        "fields": [
            {"name": "id", "type": "string", "required": true},
            {"name": "writer", "type": "string"},
            {"name": "n", "type": "integer"},
            {"name": "check", "type": "string"},
            {"name": "pad", "type": "string"},
        ],
    });
    http.admin(
        Method::PUT,
        &format!("/v1/tables/{TABLE}"),
        Some(&definition),
    )
    .await;
}

async fn mint_token(http: &Http, device: &str) -> String {
    let request = json!({"user": "crash", "device": device});
    let answer = http.admin(Method::POST, "/v1/tokens", Some(&request)).await;
    answer.body["token"]
        .as_str()
        .expect("a token in the answer")
        .to_owned()
}

/// Every row of the table, by id.
async fn server_rows(http: &Http) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut path = format!("/v1/tables/{TABLE}/records?limit=1000");
        if let Some(token) = &page_token {
            path.push_str(&format!("&page_token={token}"));
        }
        let answer = http.admin(Method::GET, &path, None).await;
        for row in answer.body["rows"].as_array().expect("rows") {
            let row = row.as_object().expect("a row").clone();
            let id = row["id"].as_str().expect("an id").to_owned();
            assert!(
                rows.insert(id.clone(), row).is_none(),
                "record `{id}` listed twice"
            );
        }
        match answer.body["next_page_token"].as_str() {
            Some(token) => page_token = Some(token.to_owned()),
            None => return rows,
        }
    }
}

/// Each device's session cursor, by device.
async fn session_cursors(http: &Http) -> BTreeMap<String, u64> {
    let answer = http.admin(Method::GET, "/v1/sync/sessions", None).await;
    answer
        .body
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|session| {
            Some((
                session["device"].as_str()?.to_owned(),
                session["acked_cursor"].as_u64()?,
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// REST writers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Insert,
    Patch,
    Delete,
}

/// A write that may have applied: acknowledged, or failed on the way.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    n: u64,
    delete: bool,
    /// The sequence number (`ETag`) of an acknowledged write.
    seq: Option<u64>,
}

/// One record of a REST writer, and what may be visible of it.
#[derive(Debug, Default)]
struct RestRecord {
    /// Writes that may have applied, from the last acknowledged one on (all of
    /// them while none is acknowledged).
    attempts: Vec<Attempt>,
    /// Whether `attempts[0]` is acknowledged.
    acked: bool,
    /// The number of the next write.
    next_n: u64,
    /// The record is (as far as the writer knows) not on the server.
    needs_insert: bool,
    /// Written since the last check.
    touched: bool,
}

/// What a record shows after a restart, against what was written.
enum Verdict {
    /// A state the writes allow; with the sequence number the record must
    /// carry when it is still at its acknowledged write.
    Allowed(Option<u64>),
    Lost(String),
    Impossible(String),
}

impl RestRecord {
    fn new() -> RestRecord {
        RestRecord {
            next_n: 1,
            needs_insert: true,
            ..RestRecord::default()
        }
    }

    fn record(&mut self, attempt: Attempt, acknowledged: bool) {
        if acknowledged {
            self.attempts.clear();
            self.acked = true;
        }
        self.attempts.push(attempt);
    }

    fn judge(&self, visible: Option<u64>) -> Verdict {
        let floor = self.acked.then(|| self.attempts[0]);
        match (visible, floor) {
            (None, None) => Verdict::Allowed(None),
            (None, Some(_)) if self.attempts.iter().any(|attempt| attempt.delete) => {
                Verdict::Allowed(None)
            }
            (None, Some(floor)) => Verdict::Lost(format!(
                "absent, but write {} was acknowledged (later attempts {:?})",
                floor.n,
                self.later_attempts()
            )),
            (Some(n), Some(floor)) if n < floor.n => Verdict::Lost(format!(
                "shows write {n}, older than acknowledged write {} (later attempts {:?})",
                floor.n,
                self.later_attempts()
            )),
            (Some(n), floor) => match self
                .attempts
                .iter()
                .find(|attempt| attempt.n == n && !attempt.delete)
            {
                Some(attempt) if floor.is_some_and(|floor| floor.n == n) => {
                    Verdict::Allowed(attempt.seq)
                }
                Some(_) => Verdict::Allowed(None),
                None => Verdict::Impossible(format!(
                    "shows write {n}, which is not one that may have applied: {:?}",
                    self.attempts
                )),
            },
        }
    }

    fn later_attempts(&self) -> Vec<u64> {
        let skip = usize::from(self.acked);
        self.attempts
            .iter()
            .skip(skip)
            .map(|attempt| attempt.n)
            .collect()
    }

    fn delete_attempted_after(&self, n: u64) -> bool {
        self.attempts
            .iter()
            .any(|attempt| attempt.delete && attempt.n > n)
    }
}

/// A REST client writing its own records one request at a time.
struct RestWriter {
    index: usize,
    token: String,
    rng: fastrand::Rng,
    next_record: u64,
    records: BTreeMap<String, RestRecord>,
    /// Records still written to: not deleted, no delete that may have applied.
    live: Vec<String>,
}

impl RestWriter {
    fn new(index: usize, token: String, seed: u64) -> RestWriter {
        RestWriter {
            index,
            token,
            rng: fastrand::Rng::with_seed(seed),
            next_record: 0,
            records: BTreeMap::new(),
            live: Vec::new(),
        }
    }

    async fn run(
        mut self,
        http: Http,
        tally: Arc<Mutex<Tally>>,
        stop: Arc<AtomicBool>,
        seq_floor: u64,
    ) -> RestWriter {
        while !stop.load(Ordering::SeqCst) {
            self.write_once(&http, &tally, seq_floor).await;
        }
        self
    }

    fn pick(&mut self) -> String {
        if self.live.is_empty() || self.rng.u8(..100) < 25 {
            let id = format!("w{}-{}", self.index, self.next_record);
            self.next_record += 1;
            self.records.insert(id.clone(), RestRecord::new());
            self.live.push(id.clone());
            id
        } else {
            self.live[self.rng.usize(..self.live.len())].clone()
        }
    }

    async fn write_once(&mut self, http: &Http, tally: &Mutex<Tally>, seq_floor: u64) {
        let id = self.pick();
        let delete = self.rng.u8(..100) < 4;
        let record = self.records.get_mut(&id).expect("picked record");
        let n = record.next_n;
        record.next_n += 1;
        let action = if record.needs_insert {
            Action::Insert
        } else if delete {
            Action::Delete
        } else {
            Action::Patch
        };
        let path = format!("/v1/tables/{TABLE}/records");
        let result = match action {
            Action::Insert => {
                let body = Json::Object(full_row(&id, n));
                http.send(Method::POST, &path, &self.token, Some(&body))
                    .await
            }
            Action::Patch => {
                let body = Json::Object(changed_fields(&id, n));
                http.send(
                    Method::PATCH,
                    &format!("{path}/{id}"),
                    &self.token,
                    Some(&body),
                )
                .await
            }
            Action::Delete => {
                http.send(Method::DELETE, &format!("{path}/{id}"), &self.token, None)
                    .await
            }
        };
        let attempt = Attempt {
            n,
            delete: action == Action::Delete,
            seq: None,
        };
        record.touched = true;
        // Whether the server said for certain that the write did not apply.
        let mut refused = false;
        match result {
            Ok(answer) if answer.ok() => {
                let mut tally = lock(tally);
                tally.rest_acked += 1;
                let mut acknowledged = attempt;
                if action != Action::Delete {
                    let seq = answer.etag.unwrap_or(0);
                    if seq <= seq_floor {
                        tally.violation(
                            Kind::Other,
                            format!(
                                "record `{id}` write {n} got sequence number {seq}, not above {seq_floor}, the latest before the restart"
                            ),
                        );
                    }
                    tally.max_acked_seq = tally.max_acked_seq.max(seq);
                    if answer.body.as_object() != Some(&full_row(&id, n)) {
                        tally.violation(
                            Kind::Other,
                            format!(
                                "record `{id}` write {n} answered with another row: {}",
                                answer.body
                            ),
                        );
                    }
                    acknowledged.seq = Some(seq);
                }
                record.record(acknowledged, true);
                record.needs_insert = false;
            }
            // Not there: its insert was lost before anything was acknowledged
            // (otherwise the check after the restart reports it). Insert again.
            Ok(answer) if answer.status == 404 && action != Action::Insert => {
                refused = true;
                record.needs_insert = true;
            }
            // Already there: an insert that failed on the way had applied.
            Ok(answer) if answer.status == 409 && action == Action::Insert => {
                refused = true;
                record.needs_insert = false;
            }
            // Anything else may have applied.
            Ok(_) | Err(_) => {
                if result.is_ok() {
                    lock(tally).odd_statuses += 1;
                }
                record.record(attempt, false);
                if action == Action::Insert {
                    record.needs_insert = false;
                }
            }
        }
        // A record that is or may be deleted is never written again.
        if action == Action::Delete && !refused {
            self.live.retain(|live| *live != id);
        }
    }
}

// ---------------------------------------------------------------------------
// Phones.

/// One of a phone's own records.
#[derive(Debug)]
struct PhoneRecord {
    /// The latest local write.
    local_n: u64,
    /// The latest write a push acknowledged.
    acked_n: Option<u64>,
}

/// A phone: the reference client over HTTP, kept (with its replica) across
/// every restart of the server.
struct Phone {
    device: String,
    client: Client<HttpTransport>,
    rng: fastrand::Rng,
    next_record: u64,
    records: BTreeMap<String, PhoneRecord>,
    /// Local writes not yet known pushed.
    unpushed: u64,
    /// The cursor the last successful acknowledgement stored.
    acked_cursor: Option<u64>,
    index: usize,
}

impl Phone {
    fn new(index: usize, url: &str, token: &str, seed: u64) -> Phone {
        let device = format!("phone-{index}");
        let mut config = ClientConfig::new(device.clone(), vec![WireScope::all(TABLE)]);
        config.retry = RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        let transport = HttpTransport::new(url, token).expect("transport");
        Phone {
            device,
            client: Client::new(config, transport).expect("client"),
            rng: fastrand::Rng::with_seed(seed),
            next_record: 0,
            records: BTreeMap::new(),
            unpushed: 0,
            acked_cursor: None,
            index,
        }
    }

    async fn run(mut self, tally: Arc<Mutex<Tally>>, stop: Arc<AtomicBool>) -> Phone {
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..self.rng.usize(1..=3) {
                self.write_locally(&tally).await;
            }
            self.push(&tally).await;
            let _ = self.pull().await;
            let pause = self.rng.u64(0..=20);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        self
    }

    async fn write_locally(&mut self, tally: &Mutex<Tally>) {
        let ids: Vec<&String> = self.records.keys().collect();
        let written = if ids.is_empty() || self.rng.u8(..100) < 30 {
            let id = format!("p{}-{}", self.index, self.next_record);
            self.next_record += 1;
            let fields = json_fields(&full_row(&id, 1));
            self.client
                .insert(TABLE, fields)
                .await
                .map(|_| (id.clone(), 1))
        } else {
            let id = ids[self.rng.usize(..ids.len())].clone();
            let n = self.records[&id].local_n + 1;
            let fields = json_fields(&changed_fields(&id, n));
            self.client
                .update(TABLE, &id, fields)
                .await
                .map(|()| (id.clone(), n))
        };
        match written {
            Ok((id, n)) => {
                self.records
                    .entry(id)
                    .or_insert(PhoneRecord {
                        local_n: 0,
                        acked_n: None,
                    })
                    .local_n = n;
                self.unpushed += 1;
            }
            Err(error) => lock(tally).violation(
                Kind::Other,
                format!("{}: a local write failed: {error}", self.device),
            ),
        }
    }

    /// Pushes the queue; when it empties, every local write so far is
    /// acknowledged.
    async fn push(&mut self, tally: &Mutex<Tally>) -> bool {
        let Ok(report) = self.client.push().await else {
            return false;
        };
        let mut tally = lock(tally);
        for rejected in &report.rejected {
            tally.violation(
                Kind::Other,
                format!(
                    "{}: the server rejected a pushed op: {rejected:?}",
                    self.device
                ),
            );
        }
        if self.client.queued_ops() > 0 {
            return false;
        }
        tally.pushed_acked += self.unpushed;
        self.unpushed = 0;
        for record in self.records.values_mut() {
            record.acked_n = Some(record.local_n);
        }
        true
    }

    /// Pulls until nothing is left; remembers the cursor when its
    /// acknowledgement succeeded.
    async fn pull(&mut self) -> Result<PullReport, ClientError> {
        let acks = self.client.stats().acks;
        let report = self.client.pull_all().await?;
        if self.client.stats().acks > acks {
            self.acked_cursor = Some(self.client.cursor());
        }
        Ok(report)
    }

    /// [`Phone::pull`], retried a few times: the first requests after a
    /// restart may meet connections to the old process.
    async fn pull_with_retries(&mut self) -> Result<PullReport, ClientError> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.pull().await {
                Err(_) if tries < 5 => {}
                done => return done,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Checks.

/// Checks the server against everything written and served, before anyone
/// writes again. False when the table itself is gone.
async fn verify(
    http: &Http,
    writers: &mut [RestWriter],
    phones: &[Phone],
    tally: &Mutex<Tally>,
    label: &str,
    latest_seq: u64,
) -> bool {
    let table = http
        .send(
            Method::GET,
            &format!("/v1/tables/{TABLE}"),
            DEV_ADMIN_KEY,
            None,
        )
        .await
        .expect("GET the table");
    if !table.ok() {
        lock(tally).violation(
            Kind::Lost,
            format!(
                "{label}: table `{TABLE}` is gone: {} {}",
                table.status, table.body
            ),
        );
        return false;
    }
    let sessions = session_cursors(http).await;
    let rows = server_rows(http).await;
    let mut seq_checks = Vec::new();
    {
        let mut tally = lock(tally);
        let tally = &mut *tally;
        for (id, row) in &rows {
            if let Err(problem) = whole_row(id, row) {
                tally.violation(Kind::HalfApplied, format!("{label}: server: {problem}"));
            }
            let known = match writer_of(id) {
                Some(writer) if writer.starts_with("rest-") => writers
                    .iter()
                    .any(|rest| rest.records.contains_key(id.as_str())),
                Some(_) => phones.iter().any(|phone| phone.records.contains_key(id)),
                None => false,
            };
            if !known {
                tally.violation(
                    Kind::Other,
                    format!("{label}: record `{id}` was never written: {}", brief(row)),
                );
            }
        }
        let visible = |id: &str| rows.get(id).and_then(|row| row.get("n")?.as_u64());

        for writer in writers.iter_mut() {
            for (id, record) in &mut writer.records {
                match record.judge(visible(id)) {
                    Verdict::Allowed(Some(seq)) if record.touched => {
                        seq_checks.push((id.clone(), seq));
                    }
                    Verdict::Allowed(_) => {}
                    Verdict::Lost(problem) => {
                        tally.violation(Kind::Lost, format!("{label}: record `{id}` {problem}"));
                    }
                    Verdict::Impossible(problem) => {
                        tally.violation(Kind::Other, format!("{label}: record `{id}` {problem}"));
                    }
                }
                record.touched = false;
            }
        }

        for phone in phones {
            for (id, record) in &phone.records {
                match (visible(id), record.acked_n) {
                    (None, Some(acked)) => tally.violation(
                        Kind::Lost,
                        format!("{label}: {}'s record `{id}` is absent, but its write {acked} was pushed", phone.device),
                    ),
                    (Some(n), Some(acked)) if n < acked => tally.violation(
                        Kind::Lost,
                        format!("{label}: {}'s record `{id}` shows write {n}, older than pushed write {acked}", phone.device),
                    ),
                    (Some(n), _) if n > record.local_n => tally.violation(
                        Kind::Other,
                        format!("{label}: {}'s record `{id}` shows write {n}, never written (latest {})", phone.device, record.local_n),
                    ),
                    _ => {}
                }
            }
            for (id, local) in phone.client.rows(TABLE) {
                if phone.client.is_pending(TABLE, &id) {
                    continue;
                }
                let held = match whole_row(&id, &local_json(&local)) {
                    Ok(n) => n,
                    Err(problem) => {
                        tally.violation(
                            Kind::HalfApplied,
                            format!("{label}: {} pulled: {problem}", phone.device),
                        );
                        continue;
                    }
                };
                let deleted_later = writers.iter().any(|writer| {
                    writer
                        .records
                        .get(&id)
                        .is_some_and(|record| record.delete_attempted_after(held))
                });
                match visible(&id) {
                    Some(n) if n >= held => {}
                    None if deleted_later => {}
                    shown => tally.violation(
                        Kind::ServedThenLost,
                        format!(
                            "{label}: {} pulled write {held} of `{id}`; the server now shows {}",
                            phone.device,
                            shown.map_or("nothing".to_owned(), |n| format!("write {n}"))
                        ),
                    ),
                }
            }
            let cursor = phone.client.cursor();
            if cursor > latest_seq {
                tally.violation(
                    Kind::Other,
                    format!("{label}: {} holds cursor {cursor}, beyond the server's latest sequence number {latest_seq}", phone.device),
                );
            }
            if let Some(acked) = phone.acked_cursor {
                match sessions.get(&phone.device) {
                    None => tally.violation(
                        Kind::Other,
                        format!("{label}: {}'s session is gone (it had acknowledged cursor {acked})", phone.device),
                    ),
                    Some(&held) if held < acked => tally.violation(
                        Kind::Other,
                        format!("{label}: {}'s session holds cursor {held}, but {acked} was acknowledged", phone.device),
                    ),
                    Some(_) => {}
                }
            }
        }
        if tally.max_acked_seq > latest_seq {
            let max = tally.max_acked_seq;
            tally.violation(
                Kind::Other,
                format!("{label}: the latest sequence number is {latest_seq}, but a write acknowledged {max}"),
            );
        }
    }

    for (id, seq) in seq_checks {
        let path = format!("/v1/tables/{TABLE}/records/{id}");
        let answer = http.admin(Method::GET, &path, None).await;
        if answer.etag != Some(seq) {
            lock(tally).violation(
                Kind::Other,
                format!(
                    "{label}: record `{id}` is at its acknowledged write, whose sequence number was {seq}, but its ETag is {:?}",
                    answer.etag
                ),
            );
        }
    }
    true
}

/// Each phone resumes from its own cursor. Its first batch holds at most one
/// record per sequence number after the cursor, plus the records it asked for
/// whole: never a resend of everything. Once it has pulled everything (nobody
/// writes meanwhile), it holds exactly the server's rows, apart from its own
/// edits not yet pushed: a cursor never passed a change the phone did not get.
async fn resume_incrementally(
    http: &Http,
    phones: &mut [Phone],
    tally: &Mutex<Tally>,
    label: &str,
    latest_seq: u64,
) {
    let rows = server_rows(http).await;
    for phone in phones {
        let replica = phone.client.replica();
        let before = replica.cursor;
        let asked_whole = replica.fetch.len() + replica.confirm.len();
        let mut first = phone.client.pull_once().await;
        for _ in 0..4 {
            if first.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            first = phone.client.pull_once().await;
        }
        let pulled = match first {
            Ok(_) => phone.pull_with_retries().await.map(|_| first),
            Err(error) => Err(error),
        };
        let first = match pulled {
            Ok(Ok(first)) => first,
            Ok(Err(error)) | Err(error) => {
                lock(tally).violation(
                    Kind::Other,
                    format!(
                        "{label}: {} cannot pull after the restart: {error}",
                        phone.device
                    ),
                );
                continue;
            }
        };
        let mut tally = lock(tally);
        let changes = latest_seq.saturating_sub(before);
        if first.records as u64 > changes + asked_whole as u64 {
            tally.violation(
                Kind::Other,
                format!(
                    "{label}: {}'s first batch after the restart held {} records from cursor {before}, but only {changes} changes came after it (latest {latest_seq}) and it asked for {asked_whole} whole",
                    phone.device, first.records
                ),
            );
        }
        let held: BTreeMap<String, Row> = phone
            .client
            .rows(TABLE)
            .into_iter()
            .filter(|(id, _)| !phone.client.is_pending(TABLE, id))
            .map(|(id, row)| (id, local_json(&row)))
            .collect();
        let mut missing = Vec::new();
        let mut different = Vec::new();
        for (id, row) in &rows {
            match held.get(id) {
                Some(local) if local != row => different.push(format!(
                    "`{id}` (phone n={}, server n={})",
                    local["n"], row["n"]
                )),
                None if !phone.client.is_pending(TABLE, id) => {
                    missing.push(format!("`{id}` (server n={})", row["n"]));
                }
                _ => {}
            }
        }
        let extra: Vec<&String> = held.keys().filter(|id| !rows.contains_key(*id)).collect();
        if !missing.is_empty() || !different.is_empty() || !extra.is_empty() {
            tally.violation(
                Kind::Other,
                format!(
                    "{label}: {} pulled up to cursor {} after the restart but does not hold the server's rows: missing {missing:?}, different {different:?}, extra {extra:?}",
                    phone.device,
                    phone.client.cursor()
                ),
            );
        }
    }
}

/// No more writes: every phone pushes its queue, then every phone pulls until
/// nothing is left.
async fn converge(phones: &mut [Phone], tally: &Mutex<Tally>) {
    for phone in phones.iter_mut() {
        let mut pushed = false;
        for _ in 0..5 {
            if phone.push(tally).await {
                pushed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !pushed {
            lock(tally).violation(
                Kind::Other,
                format!(
                    "{}: {} ops stay queued after five pushes",
                    phone.device,
                    phone.client.queued_ops()
                ),
            );
        }
    }
    for phone in phones.iter_mut() {
        if let Err(error) = phone.pull_with_retries().await {
            lock(tally).violation(
                Kind::Other,
                format!("{}: the last pull failed: {error}", phone.device),
            );
        }
    }
}

/// Each phone's rows are the server's, and each session holds its phone's
/// cursor.
async fn compare_replicas(http: &Http, phones: &[Phone], tally: &Mutex<Tally>) {
    let rows = server_rows(http).await;
    let sessions = session_cursors(http).await;
    let mut tally = lock(tally);
    for phone in phones {
        let held: BTreeMap<String, Row> = phone
            .client
            .rows(TABLE)
            .into_iter()
            .map(|(id, row)| (id, local_json(&row)))
            .collect();
        let missing: Vec<&String> = rows.keys().filter(|id| !held.contains_key(*id)).collect();
        let extra: Vec<&String> = held.keys().filter(|id| !rows.contains_key(*id)).collect();
        let different: Vec<&String> = rows
            .iter()
            .filter(|(id, row)| held.get(*id).is_some_and(|local| local != *row))
            .map(|(id, _)| id)
            .collect();
        if !missing.is_empty() || !extra.is_empty() || !different.is_empty() {
            tally.violation(
                Kind::Other,
                format!(
                    "{} does not hold the server's rows: missing {missing:?}, extra {extra:?}, different {different:?}",
                    phone.device
                ),
            );
        }
        let pending: Vec<String> = held
            .keys()
            .filter(|id| phone.client.is_pending(TABLE, id))
            .cloned()
            .collect();
        if !pending.is_empty() || phone.client.queued_ops() > 0 {
            tally.violation(
                Kind::Other,
                format!(
                    "{}: {} ops queued and records still pending after convergence: {pending:?}",
                    phone.device,
                    phone.client.queued_ops()
                ),
            );
        }
        let cursor = phone.client.cursor();
        if sessions.get(&phone.device) != Some(&cursor) {
            tally.violation(
                Kind::Other,
                format!(
                    "{}: its session holds cursor {:?}, the phone {cursor}",
                    phone.device,
                    sessions.get(&phone.device)
                ),
            );
        }
    }
}
