//! Sync figures over real loopback HTTP: the server (`mobilesyncdb::api`) on an
//! ephemeral port with the seeded 10 MB data set loaded, and the reference
//! `Client` over `HttpTransport`. Wire bytes are counted by a small TCP proxy
//! between the client and the server (both directions, HTTP headers included).
//!
//! `cargo bench --bench http` prints one `figure <name> = <value> <unit>` line per
//! figure, after a human line with its context and target (wire bytes beside the
//! client's message bytes, so that the HTTP overhead is printed):
//!
//! - `http_initial_sync_10mb_ms` (median of three fresh clients) and
//!   `http_initial_sync_10mb_bytes`;
//! - `http_incremental_1000_of_35k_ms` and `_bytes`: after 1,000 records changed
//!   on the server, an already-synced client pulls again;
//! - `http_noop_pull_bytes` and `_requests`: a `pull_all` when nothing changed;
//! - `http_noop_pull_per_s`: no-change pulls per second: pre-encoded
//!   `PullRequest` messages posted through `HttpTransport::exchange` from 1,000
//!   tasks (each with its own device and token) over one shared reqwest pool,
//!   straight to the server;
//! - `http_push_records_per_s`: records inserted and pushed per second by 8
//!   clients, until the server answered.
//!
//! Set `MSDB_BENCH_SEED` to change the data set.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::client::{Client, ClientStats, HttpTransport, RetryPolicy, Transport};
use mobilesyncdb::config::{AccessRule, Config};
use mobilesyncdb::crdt::Value;
use mobilesyncdb::dataset::{Dataset, DatasetSpec};
use mobilesyncdb::sync::wire::MessageKind;
use mobilesyncdb::sync::{PullRequest, decode_pull_response, encode_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::{FullPull, MAX_MESSAGE, change_records, figure, median, ms, scopes};

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
                counters.connections.fetch_add(1, Ordering::SeqCst);
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

    /// TCP connections accepted so far.
    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Copies `from` into `to`, counting as it goes (pooled connections stay open,
/// so the count cannot wait for the end of the connection). Bytes are counted
/// when read, before they are passed on: by the time the client has its answer,
/// every byte of the exchange is in the counters.
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
        counter.fetch_add(read as u64, Ordering::SeqCst);
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn start_server(dataset: &Dataset) -> ServerHandle {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    config.engine = common::engine_config();
    for schema in dataset.schemas() {
        config
            .access
            .insert(schema.name.clone(), AccessRule::Shared);
    }
    let db = common::loaded_database(dataset, config.engine.clone());
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

/// The shared client configuration, without retries: a failed request fails
/// the bench.
fn client_config(dataset: &Dataset, device: &str) -> mobilesyncdb::client::ClientConfig {
    let mut config = common::client_config(dataset, device);
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

/// Bytes of one measured stretch: on the wire (counted by the proxy, HTTP
/// headers included) and in sync messages (the request and answer bodies).
struct Traffic {
    wire_up: u64,
    wire_down: u64,
    message_up: u64,
    message_down: u64,
}

impl Traffic {
    fn wire(&self) -> u64 {
        self.wire_up + self.wire_down
    }

    fn messages(&self) -> u64 {
        self.message_up + self.message_down
    }
}

impl std::fmt::Display for Traffic {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "wire {} B up + {} B down = {} B; messages {} B up + {} B down = {} B; HTTP overhead {} B",
            self.wire_up,
            self.wire_down,
            self.wire(),
            self.message_up,
            self.message_down,
            self.messages(),
            self.wire() as i64 - self.messages() as i64,
        )
    }
}

/// The proxy's and a client's counters at the start of a measured stretch.
struct Meter {
    wire_up: u64,
    wire_down: u64,
    connections: u64,
    stats: ClientStats,
}

impl Meter {
    fn start(proxy: &Proxy, client: &Client<HttpTransport>) -> Meter {
        let (wire_up, wire_down) = proxy.bytes();
        Meter {
            wire_up,
            wire_down,
            connections: proxy.connections(),
            stats: client.stats(),
        }
    }

    /// The stretch's bytes, HTTP requests and new TCP connections.
    fn stop(&self, proxy: &Proxy, client: &Client<HttpTransport>) -> (Traffic, u64, u64) {
        let (wire_up, wire_down) = proxy.bytes();
        let stats = client.stats();
        let traffic = Traffic {
            wire_up: wire_up - self.wire_up,
            wire_down: wire_down - self.wire_down,
            message_up: stats.bytes_sent - self.stats.bytes_sent,
            message_down: stats.bytes_received - self.stats.bytes_received,
        };
        (
            traffic,
            stats.requests - self.stats.requests,
            proxy.connections() - self.connections,
        )
    }
}

/// Where the initial sync's time goes: the server alone (in process), the
/// server behind HTTP without storing, and the whole client (measured by the
/// caller).
async fn breakdown(handle: &ServerHandle, dataset: &Dataset, proxy: &Proxy) {
    let server = handle.state().sync().clone();
    let tables = scopes(dataset);
    let started = Instant::now();
    let mut local = FullPull::new(
        PullRequest {
            device: "breakdown-local".into(),
            tables: tables.clone(),
            ..PullRequest::default()
        },
        true,
    );
    while let Some(message) = local.next_message() {
        let server = server.clone();
        let answer = tokio::task::spawn_blocking(move || server.handle(&message))
            .await
            .expect("server task");
        local.answer(&answer);
    }
    let local_time = started.elapsed();

    let device = "breakdown-http";
    let transport = HttpTransport::new(&proxy.url, &token(handle, device)).expect("transport");
    let (up, down) = proxy.bytes();
    let started = Instant::now();
    let mut pull = FullPull::new(
        PullRequest {
            device: device.into(),
            tables,
            ..PullRequest::default()
        },
        true,
    );
    let mut decode = Duration::ZERO;
    while let Some(message) = pull.next_message() {
        let answer = transport.exchange(message).await.expect("exchange");
        let decoding = Instant::now();
        pull.answer(&answer);
        decode += decoding.elapsed();
    }
    let http = started.elapsed();
    let (up_after, down_after) = proxy.bytes();
    let traffic = Traffic {
        wire_up: up_after - up,
        wire_down: down_after - down,
        message_up: pull.bytes_sent as u64,
        message_down: pull.bytes_received as u64,
    };
    println!(
        "  breakdown of a full pull: server alone (in process, {} batches, {} B of messages) {:.0} ms; \
         raw HTTP exchanges through the proxy without storing {:.0} ms (of which decoding {:.0} ms), {traffic}",
        local.batches,
        local.bytes_received,
        ms(local_time),
        ms(http),
        ms(decode),
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
    let mut requests = 0;
    let mut connections = 0;
    let mut kept = None;
    for run in 0..3 {
        let client = client(handle, dataset, &proxy.url, &format!("initial-{run}"));
        let meter = Meter::start(proxy, &client);
        let started = Instant::now();
        let report = client.pull_all().await.expect("initial sync");
        let elapsed = started.elapsed();
        let (traffic, run_requests, run_connections) = meter.stop(proxy, &client);
        println!(
            "  run {run}: {:.0} ms, {} records in {} batches, {run_requests} requests over {run_connections} TCP connection(s); {traffic}",
            ms(elapsed),
            report.records,
            report.batches,
        );
        times.push(elapsed);
        wire.push(traffic.wire());
        requests += run_requests;
        connections += run_connections;
        kept = Some(client);
    }
    println!(
        "  initial sync of the 10 MB data set ({} records, {} B of JSON) over HTTP, median of 3 (time and wire bytes, each sorted); \
         {requests} HTTP requests over {connections} TCP connections in all; target <= 600 ms, <= 6,000,000 B",
        dataset.record_count(),
        dataset.json_bytes()
    );
    figure("http_initial_sync_10mb_ms", ms(median(times)), "ms");
    figure("http_initial_sync_10mb_bytes", median(wire) as f64, "B");
    breakdown(handle, dataset, proxy).await;

    let client = kept.expect("three runs");
    let changed = change_records(handle.state().database(), dataset, seed ^ 0x5eed, 1_000);
    let meter = Meter::start(proxy, &client);
    let started = Instant::now();
    let report = client.pull_all().await.expect("incremental");
    let elapsed = started.elapsed();
    let (traffic, requests, _) = meter.stop(proxy, &client);
    println!(
        "  incremental: {changed} records changed on the server; {} received in {} batches, {requests} requests; \
         {traffic}; target <= 60 ms, <= 80,000 B",
        report.records, report.batches,
    );
    figure("http_incremental_1000_of_35k_ms", ms(elapsed), "ms");
    figure(
        "http_incremental_1000_of_35k_bytes",
        traffic.wire() as f64,
        "B",
    );
    client
}

async fn noop_pull(client: &Client<HttpTransport>, proxy: &Proxy) {
    // pull_all, what an app calls: the pull, then the acknowledgement.
    let meter = Meter::start(proxy, client);
    let started = Instant::now();
    let report = client.pull_all().await.expect("noop pull");
    let elapsed = started.elapsed();
    let (all, all_requests, _) = meter.stop(proxy, client);
    println!(
        "  no-change pull_all (acknowledges only when the cursor moved): {} records, {all_requests} HTTP requests, {:.2} ms; {all}",
        report.records,
        ms(elapsed),
    );

    // pull_once: the pull request alone.
    let meter = Meter::start(proxy, client);
    client.pull_once().await.expect("noop pull_once");
    let (once, requests, _) = meter.stop(proxy, client);
    println!("  no-change pull_once (one pull request): {requests} HTTP request; {once}");
    println!(
        "  no-change pull (figure: pull_all, {all_requests} requests, headers included); target <= 1,000 B in 1 request"
    );
    figure("http_noop_pull_bytes", all.wire() as f64, "B");
    figure("http_noop_pull_requests", all_requests as f64, "requests");
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
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "  no-change pulls/s: pre-encoded PullRequest messages posted through HttpTransport::exchange from {TASKS} tasks \
         (own device and token each) over one shared reqwest pool, straight to the server, for {:.2} s: \
         {pulls} pulls, {errors} errors; target >= 20,000 /s",
        elapsed.as_secs_f64(),
    );
    assert_eq!(
        errors, 0,
        "no-change pulls failed: no figure from failed requests"
    );
    figure(
        "http_noop_pull_per_s",
        pulls as f64 / elapsed.as_secs_f64(),
        "pulls/s",
    );
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
    assert_eq!(
        rejected, 0,
        "pushed records rejected: no figure from failed pushes"
    );
    assert_eq!(
        applied,
        CLIENTS * BATCHES * BATCH,
        "every inserted record applied"
    );
    figure(
        "http_push_records_per_s",
        applied as f64 / elapsed.as_secs_f64(),
        "records/s",
    );
}

fn main() {
    let seed = common::seed(7);
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
