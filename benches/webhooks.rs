//! Webhook delivery figures: an in-process server (in memory) with one
//! endpoint, delivering to a loopback receiver (hyper, HTTP/1.1 keep-alive)
//! that answers 204 at once.
//!
//! `cargo bench --bench webhooks` prints one `figure <name> = <value> <unit>`
//! line per figure:
//!
//! - `webhook_delivery_latency_ms_p50` and `_p99`: from a write's HTTP
//!   response (`POST /v1/tables/notes/records`) to the receiver getting its
//!   `record.created` event, over `MSDB_BENCH_WEBHOOK_WRITES` (default 500)
//!   writes spaced so that the endpoint is idle before each one. An event
//!   that arrives before the writer has read its response counts as 0
//!   (most do: the event is made with the write, under its lock); so
//!   `webhook_write_to_delivery_ms_p50`/`_p99` also give the time from
//!   sending the write request to the receiver getting the event.
//! - `webhook_events_per_s_one_endpoint`: `MSDB_BENCH_WEBHOOK_EVENTS`
//!   (default 10,000) records inserted through the engine as fast as it
//!   takes them, divided by the time from the first insert until the
//!   receiver has every event (checked to arrive in order, each once).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::config::Config;
use mobilesyncdb::crdt::{ClientId, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

mod common;
use common::{env_number, figure};

const ADMIN: &str = "Bearer msdb-dev-admin-key";

/// What the receiver got: event ids with their arrival times, in arrival order.
#[derive(Default)]
struct Arrivals {
    events: Mutex<Vec<(u64, Instant)>>,
    notify: Notify,
}

impl Arrivals {
    fn len(&self) -> usize {
        self.events.lock().expect("arrivals").len()
    }

    /// Waits until `count` events have arrived; returns the last one.
    async fn wait(&self, count: usize) -> (u64, Instant) {
        loop {
            let notified = self.notify.notified();
            {
                let events = self.events.lock().expect("arrivals");
                if events.len() >= count {
                    return events[count - 1];
                }
            }
            tokio::time::timeout(Duration::from_secs(60), notified)
                .await
                .expect("the receiver got nothing for a minute");
        }
    }
}

/// A receiver answering 204 to everything, recording each `webhook-id`.
async fn receiver(arrivals: Arc<Arrivals>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let arrivals = Arc::clone(&arrivals);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let arrived = Instant::now();
                    let event = request
                        .headers()
                        .get("webhook-id")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|id| id.strip_prefix("evt_"))
                        .and_then(|id| id.parse::<u64>().ok())
                        .expect("a webhook-id");
                    arrivals
                        .events
                        .lock()
                        .expect("arrivals")
                        .push((event, arrived));
                    arrivals.notify.notify_waiters();
                    async move {
                        let mut response = Response::new(Empty::<Bytes>::new());
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start_server() -> ServerHandle {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().expect("a network")];
    config.webhooks.retry_base_ms = 10;
    config.webhooks.retry_max_ms = 1_000;
    mobilesyncdb::api::start(config).await.expect("server")
}

async fn admin_call(request: reqwest::RequestBuilder, body: String) -> u16 {
    request
        .header("authorization", ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

async fn latency(handle: &ServerHandle, http: &reqwest::Client, arrivals: &Arrivals) {
    let writes = env_number("MSDB_BENCH_WEBHOOK_WRITES", 500) as usize;
    let url = format!("{}/v1/tables/notes/records", handle.url());
    let mut latencies = Vec::with_capacity(writes);
    let mut from_request = Vec::with_capacity(writes);
    let mut early = 0;
    for n in 0..writes {
        let before = arrivals.len();
        let sent = Instant::now();
        let status = admin_call(
            http.post(&url),
            format!(r#"{{"id":"lat{n}","text":"latency"}}"#),
        )
        .await;
        let answered = Instant::now();
        assert_eq!(status, 201, "write refused");
        let (_, arrived) = arrivals.wait(before + 1).await;
        latencies.push(arrived.saturating_duration_since(answered).as_secs_f64() * 1e3);
        from_request.push(arrived.saturating_duration_since(sent).as_secs_f64() * 1e3);
        early += usize::from(arrived < answered);
        // Idle between writes.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort_by(f64::total_cmp);
    from_request.sort_by(f64::total_cmp);
    println!(
        "delivery latency over {writes} spaced writes (HTTP response to receiver); \
         {early} of {writes} events reached the receiver before the writer had its response (counted as 0)"
    );
    figure(
        "webhook_delivery_latency_ms_p50",
        percentile(&latencies, 0.5),
        "ms",
    );
    figure(
        "webhook_delivery_latency_ms_p99",
        percentile(&latencies, 0.99),
        "ms",
    );
    println!("the same, from sending the write request to the receiver getting its event");
    figure(
        "webhook_write_to_delivery_ms_p50",
        percentile(&from_request, 0.5),
        "ms",
    );
    figure(
        "webhook_write_to_delivery_ms_p99",
        percentile(&from_request, 0.99),
        "ms",
    );
}

async fn throughput(handle: &ServerHandle, arrivals: &Arc<Arrivals>) {
    let events = env_number("MSDB_BENCH_WEBHOOK_EVENTS", 10_000) as usize;
    let before = arrivals.len();
    let db = handle.state().database().clone();
    let started = Instant::now();
    let inserted = tokio::task::spawn_blocking(move || {
        let writer = ClientId::from("bench");
        for n in 0..events {
            let fields: mobilesyncdb::schema::Fields = [
                ("id".to_owned(), Value::str(format!("tp{n}"))),
                ("text".to_owned(), Value::str("throughput")),
            ]
            .into_iter()
            .collect();
            db.insert("notes", fields, &writer).expect("insert");
        }
        started.elapsed()
    })
    .await
    .expect("writer");
    arrivals.wait(before + events).await;
    let elapsed = started.elapsed();
    let got = arrivals.events.lock().expect("arrivals")[before..].to_vec();
    assert_eq!(got.len(), events, "each event once");
    assert!(
        got.windows(2).all(|pair| pair[1].0 == pair[0].0 + 1),
        "events out of order or repeated"
    );
    println!(
        "{events} events made in {:.0} ms, all delivered after {:.0} ms (one endpoint, one at a time)",
        inserted.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3
    );
    figure(
        "webhook_events_per_s_one_endpoint",
        events as f64 / elapsed.as_secs_f64(),
        "events/s",
    );
}

fn main() {
    println!("webhook figures");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let arrivals = Arc::new(Arrivals::default());
        let addr = receiver(Arc::clone(&arrivals)).await;
        let handle = start_server().await;
        let http = reqwest::Client::new();
        let base = handle.url();
        let status = admin_call(
            http.put(format!("{base}/v1/tables/notes")),
            r#"{"primary_key":"id","fields":[{"name":"id","type":"string"},{"name":"text","type":"string"}]}"#.to_owned(),
        )
        .await;
        assert_eq!(status, 201, "table");
        let status = admin_call(
            http.post(format!("{base}/v1/webhooks")),
            format!(r#"{{"url":"http://{addr}/hook","events":["record.created"]}}"#),
        )
        .await;
        assert_eq!(status, 201, "endpoint");
        latency(&handle, &http, &arrivals).await;
        throughput(&handle, &arrivals).await;
        handle.shutdown().await;
    });
}
