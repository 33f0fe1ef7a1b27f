//! Sync figures over real loopback HTTP: the server (`mobilesyncdb::api`) on an
//! ephemeral port with the seeded 10 MB data set loaded, and the reference
//! `Client` over `HttpTransport`. Wire bytes are counted by a small TCP proxy
//! between the client and the server (both directions, HTTP headers included).
//!
//! `cargo bench --bench http` prints one `figure <name> <value>` line per figure,
//! after a human line with its context and target:
//!
//! - `http_initial_sync_10mb_ms` (median of three fresh clients) and
//!   `http_initial_sync_10mb_bytes`;
//! - `http_incremental_1000_of_35k_ms` and `_bytes`: after 1,000 records changed
//!   on the server, an already-synced client pulls again;
//! - `http_noop_pull_bytes`: a pull when nothing changed;
//! - `http_noop_pull_per_s`: no-change pulls per second from 1,000 concurrent
//!   clients, each with its own device token, straight to the server;
//! - `http_push_records_per_s`: records inserted and pushed per second by 8
//!   clients, until the server answered.
//!
//! Set `MSDB_BENCH_SEED` to change the data set.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::client::{Client, ClientConfig, HttpTransport, RetryPolicy, Transport};
use mobilesyncdb::config::{AccessRule, Config};
use mobilesyncdb::crdt::{ClientId, Edit, Value};
use mobilesyncdb::dataset::{Dataset, DatasetSpec};
use mobilesyncdb::engine::Database;
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{PullRequest, WireScope, decode_pull_response, encode_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_MESSAGE: usize = 64 << 20;

fn figure(name: &str, value: f64) {
    if value >= 100.0 {
        println!("figure {name} {value:.0}");
    } else {
        println!("figure {name} {value:.2}");
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// A TCP proxy that counts the bytes it forwards, both directions.
#[derive(Clone)]
struct Proxy {
    url: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let proxy = Proxy {
            url,
            up: Arc::new(AtomicU64::new(0)),
            down: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        };
        let counters = proxy.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (client_read, client_write) = inbound.into_split();
                let (server_read, server_write) = outbound.into_split();
                tokio::spawn(pump(client_read, server_write, Arc::clone(&counters.up)));
                tokio::spawn(pump(server_read, client_write, Arc::clone(&counters.down)));
            }
        });
        proxy
    }

    /// Bytes forwarded so far: (client to server, server to client).
    fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

/// Copies `from` into `to`, counting as it goes (pooled connections stay open,
/// so the count cannot wait for the end of the connection).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        counter.fetch_add(read as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}

async fn start_server(dataset: &Dataset) -> ServerHandle {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    config.engine.max_memory_bytes = 8 << 30;
    for schema in dataset.schemas() {
        config
            .access
            .insert(schema.name.clone(), AccessRule::Shared);
    }
    let db = Database::new(config.engine.clone()).expect("engine config");
    dataset
        .load_into(&db, &ClientId::from("seed"))
        .expect("load");
    mobilesyncdb::api::start_with(config, db)
        .await
        .expect("server")
}

fn token(handle: &ServerHandle, device: &str) -> String {
    handle
        .state()
        .auth()
        .mint("user", device, None)
        .expect("token")
        .0
}

fn scopes(dataset: &Dataset) -> Vec<WireScope> {
    dataset
        .schemas()
        .into_iter()
        .map(|schema| WireScope::all(schema.name))
        .collect()
}

fn client_config(dataset: &Dataset, device: &str) -> ClientConfig {
    let mut config = ClientConfig::new(device, scopes(dataset));
    for schema in dataset.schemas() {
        config = config.primary_key(&schema.name, &schema.primary_key);
    }
    config.retry = RetryPolicy::never();
    config
}

fn client(
    handle: &ServerHandle,
    dataset: &Dataset,
    url: &str,
    device: &str,
) -> Client<HttpTransport> {
    let transport = HttpTransport::new(url, &token(handle, device)).expect("transport");
    Client::new(client_config(dataset, device), transport).expect("client")
}

/// Applies edits until `wanted` distinct records changed (as benches/sync.rs).
fn change_records(db: &Database, dataset: &Dataset, seed: u64, wanted: usize) -> usize {
    let origin = ClientId::from("web");
    let mut changed = BTreeSet::new();
    for edit in dataset.random_edits(seed, wanted * 4) {
        if changed.len() == wanted {
            break;
        }
        if !changed.insert((edit.table.clone(), edit.id.clone())) {
            continue;
        }
        let edits: Vec<Edit> = edit
            .fields
            .into_iter()
            .map(|(field, value)| Edit::Set { field, value })
            .collect();
        db.patch(&edit.table, &edit.id, edits, &origin)
            .expect("edit");
    }
    changed.len()
}

/// Where the initial sync's time goes: the server alone (in process), the
/// server behind HTTP without storing, and the whole client (measured by the
/// caller).
async fn breakdown(handle: &ServerHandle, dataset: &Dataset, proxy: &Proxy) {
    let server = handle.state().sync().clone();
    let tables = scopes(dataset);
    let started = Instant::now();
    let mut request = PullRequest {
        device: "breakdown-local".into(),
        tables: tables.clone(),
        ..PullRequest::default()
    };
    let mut batches = 0;
    let mut bytes = 0;
    loop {
        let answer = {
            let server = server.clone();
            let message = encode_request(MessageKind::PullRequest, &request);
            tokio::task::spawn_blocking(move || server.handle(&message))
                .await
                .expect("server task")
        };
        bytes += answer.len();
        let batch = decode_pull_response(&answer, MAX_MESSAGE).expect("batch");
        batches += 1;
        request.cursor = batch.next_cursor;
        request.base = Some(batch.base);
        if !batch.has_more {
            break;
        }
    }
    let local = started.elapsed();

    let device = "breakdown-http";
    let transport = HttpTransport::new(&proxy.url, &token(handle, device)).expect("transport");
    let (up, down) = proxy.bytes();
    let started = Instant::now();
    let mut request = PullRequest {
        device: device.into(),
        tables,
        ..PullRequest::default()
    };
    let mut decode = Duration::ZERO;
    loop {
        let answer = transport
            .exchange(encode_request(MessageKind::PullRequest, &request))
            .await
            .expect("exchange");
        let decoding = Instant::now();
        let batch = decode_pull_response(&answer, MAX_MESSAGE).expect("batch");
        decode += decoding.elapsed();
        request.cursor = batch.next_cursor;
        request.base = Some(batch.base);
        if !batch.has_more {
            break;
        }
    }
    let http = started.elapsed();
    let (up_after, down_after) = proxy.bytes();
    println!(
        "  breakdown of a full pull: server alone (in process, {batches} batches, {bytes} B of messages) {:.0} ms; \
         raw HTTP exchanges through the proxy without storing {:.0} ms (of which decoding {:.0} ms), {} B on the wire",
        ms(local),
        ms(http),
        ms(decode),
        (up_after - up) + (down_after - down),
    );
}

async fn initial_and_incremental(
    handle: &ServerHandle,
    dataset: &Dataset,
    proxy: &Proxy,
    seed: u64,
) -> Client<HttpTransport> {
    let mut times = Vec::new();
    let mut wire = Vec::new();
    let mut kept = None;
    for run in 0..3 {
        let client = client(handle, dataset, &proxy.url, &format!("initial-{run}"));
        let (up, down) = proxy.bytes();
        let started = Instant::now();
        let report = client.pull_all().await.expect("initial sync");
        let elapsed = started.elapsed();
        // The proxy counts after forwarding: let the last writes land.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (up_after, down_after) = proxy.bytes();
        let stats = client.stats();
        println!(
            "  run {run}: {:.0} ms, {} records in {} batches, {} requests, {} B up + {} B down on the wire ({} B of messages received)",
            ms(elapsed),
            report.records,
            report.batches,
            stats.requests,
            up_after - up,
            down_after - down,
            stats.bytes_received,
        );
        times.push(elapsed);
        wire.push((up_after - up) + (down_after - down));
        kept = Some(client);
    }
    println!(
        "  initial sync of the 10 MB data set ({} records, {} B of JSON) over HTTP, median of 3; target <= 600 ms, <= 6,000,000 B",
        dataset.record_count(),
        dataset.json_bytes()
    );
    figure("http_initial_sync_10mb_ms", ms(median(times)));
    figure("http_initial_sync_10mb_bytes", wire[wire.len() / 2] as f64);
    breakdown(handle, dataset, proxy).await;

    let client = kept.expect("three runs");
    let changed = change_records(handle.state().database(), dataset, seed ^ 0x5eed, 1_000);
    let before = client.stats();
    let (up, down) = proxy.bytes();
    let started = Instant::now();
    let report = client.pull_all().await.expect("incremental");
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (up_after, down_after) = proxy.bytes();
    let stats = client.stats();
    println!(
        "  incremental: {changed} records changed on the server; {} received in {} batches, {} requests, \
         {} B up + {} B down on the wire; target <= 60 ms, <= 80,000 B",
        report.records,
        report.batches,
        stats.requests - before.requests,
        up_after - up,
        down_after - down,
    );
    figure("http_incremental_1000_of_35k_ms", ms(elapsed));
    figure(
        "http_incremental_1000_of_35k_bytes",
        ((up_after - up) + (down_after - down)) as f64,
    );
    client
}

async fn noop_pull(client: &Client<HttpTransport>, proxy: &Proxy) {
    // pull_all, what an app calls: the pull, then the acknowledgement.
    let before = client.stats();
    let (up, down) = proxy.bytes();
    let started = Instant::now();
    let report = client.pull_all().await.expect("noop pull");
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (up_after, down_after) = proxy.bytes();
    let all_requests = client.stats().requests - before.requests;
    let all_bytes = (up_after - up) + (down_after - down);
    println!(
        "  no-change pull_all (acknowledges only when the cursor moved): {} records, {all_requests} HTTP requests, {} B up + {} B down, {:.2} ms",
        report.records,
        up_after - up,
        down_after - down,
        ms(elapsed),
    );

    // pull_once: the pull request alone.
    let before = client.stats();
    let (up, down) = proxy.bytes();
    client.pull_once().await.expect("noop pull_once");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (up_after, down_after) = proxy.bytes();
    let requests = client.stats().requests - before.requests;
    let once_bytes = (up_after - up) + (down_after - down);
    println!(
        "  no-change pull_once (one pull request): {requests} HTTP request, {} B up + {} B down = {once_bytes} B",
        up_after - up,
        down_after - down,
    );
    println!(
        "  no-change pull (figure: pull_all, {all_requests} requests, headers included); target <= 1,000 B in 1 request"
    );
    figure("http_noop_pull_bytes", all_bytes as f64);
    figure("http_noop_pull_requests", all_requests as f64);
}

async fn noop_throughput(handle: &ServerHandle, dataset: &Dataset, cursor: u64) {
    const TASKS: usize = 1_000;
    const RUN: Duration = Duration::from_secs(3);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(TASKS)
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client");
    let url = handle.url();
    let tables = scopes(dataset);
    let pulls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let mut tasks = Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let device = format!("device-{task}");
        let transport = HttpTransport::with_client(&url, &token(handle, &device), http.clone())
            .expect("transport");
        let request = PullRequest {
            device,
            cursor,
            base: Some(cursor),
            tables: tables.clone(),
            ..PullRequest::default()
        };
        let message = encode_request(MessageKind::PullRequest, &request);
        let pulls = Arc::clone(&pulls);
        let errors = Arc::clone(&errors);
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            // One warm-up pull opens the connection and checks the answer.
            let answer = transport
                .exchange(message.clone())
                .await
                .expect("warm-up pull");
            let batch = decode_pull_response(&answer, MAX_MESSAGE).expect("no-change batch");
            assert!(
                !batch.has_more && batch.next_cursor == cursor,
                "nothing new"
            );
            start.wait().await;
            let deadline = Instant::now() + RUN;
            while Instant::now() < deadline {
                match transport.exchange(message.clone()).await {
                    Ok(answer) if decode_pull_response(&answer, MAX_MESSAGE).is_ok() => {
                        pulls.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    start.wait().await;
    let started = Instant::now();
    for task in tasks {
        task.await.expect("pull task");
    }
    let elapsed = started.elapsed();
    let pulls = pulls.load(Ordering::Relaxed);
    println!(
        "  no-change pulls: {TASKS} concurrent clients (own token and device each, one shared reqwest pool) straight to the server \
         for {:.2} s: {pulls} pulls, {} errors; target >= 20,000 /s",
        elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );
    figure("http_noop_pull_per_s", pulls as f64 / elapsed.as_secs_f64());
}

async fn push_throughput(handle: &ServerHandle, dataset: &Dataset) {
    const CLIENTS: usize = 8;
    const BATCHES: usize = 4;
    const BATCH: usize = 250;
    let table = dataset.schemas().into_iter().next().expect("a table").name;
    let data = dataset.table(&table).expect("table");
    let key = data.schema.primary_key.clone();
    let rows = Arc::new(data.rows.clone());
    let url = handle.url();
    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for number in 0..CLIENTS {
        let device = format!("pusher-{number}");
        let transport = HttpTransport::new(&url, &token(handle, &device)).expect("transport");
        let client = Client::new(client_config(dataset, &device), transport).expect("push client");
        let rows = Arc::clone(&rows);
        let (table, key) = (table.clone(), key.clone());
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut applied = 0;
            let mut rejected = 0;
            let mut pushing = Duration::ZERO;
            for batch in 0..BATCHES {
                for index in 0..BATCH {
                    let n = batch * BATCH + index;
                    let mut fields = rows[(number * BATCHES * BATCH + n) % rows.len()].clone();
                    fields.insert(key.clone(), Value::str(format!("push-{number}-{n}")));
                    client.insert(&table, fields).await.expect("insert");
                }
                let started = Instant::now();
                let report = client.push().await.expect("push");
                pushing += started.elapsed();
                applied += report.applied;
                rejected += report.rejected.len();
            }
            (applied, rejected, pushing)
        }));
    }
    start.wait().await;
    let started = Instant::now();
    let mut applied = 0;
    let mut rejected = 0;
    let mut pushing = Duration::ZERO;
    for task in tasks {
        let (task_applied, task_rejected, task_pushing) = task.await.expect("push task");
        applied += task_applied;
        rejected += task_rejected;
        pushing += task_pushing;
    }
    let elapsed = started.elapsed();
    println!(
        "  push: {CLIENTS} clients x {BATCHES} batches of {BATCH} inserts into `{table}` (local insert + push until answered): \
         {applied} applied, {rejected} rejected in {:.0} ms; time in push() {:.0} ms per client on average",
        ms(elapsed),
        ms(pushing) / CLIENTS as f64,
    );
    figure(
        "http_push_records_per_s",
        applied as f64 / elapsed.as_secs_f64(),
    );
}

fn main() {
    let seed = std::env::var("MSDB_BENCH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(7);
    println!("http figures, seed {seed}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dataset = Dataset::generate(DatasetSpec::mb10(seed));
        let handle = start_server(&dataset).await;
        let proxy = Proxy::start(handle.addr()).await;
        let client = initial_and_incremental(&handle, &dataset, &proxy, seed).await;
        noop_pull(&client, &proxy).await;
        noop_throughput(&handle, &dataset, client.cursor()).await;
        push_throughput(&handle, &dataset).await;
        handle.shutdown().await;
    });
}
