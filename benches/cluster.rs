//! The cost of running as a cluster: write throughput of one node on its own
//! and of three cluster nodes with one nats-server (all on this machine,
//! sharing its cores), the lag from a write's answer on one node to its
//! apply on the others, and how long a new node takes to apply 100k writes.
//!
//! `cargo bench --bench cluster` (needs `nats-server` on the PATH).
//! `CLUSTER_BENCH_WRITES` (default 20,000) writes per throughput run,
//! `CLUSTER_BENCH_WRITERS` (default 64) writers at once,
//! `CLUSTER_BENCH_CATCH_UP` (default 100,000) writes the new node applies.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{env_number, figure, ms};
use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::config::Config;
use mobilesyncdb::crdt::{ClientId, Value};
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};

/// As the `mobilesyncdb` binary does (see the `jemalloc` feature).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const TABLE: &str = "notes";

struct Nats {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn start_nats() -> Nats {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("msdb-cluster-bench-{}", std::process::id()));
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .arg("-sd")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server (apt-get install -y nats-server)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Nats {
        child,
        dir,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

fn schema() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("body", FieldType::String))
        .field(FieldSpec::new("n", FieldType::Integer))
}

async fn node(nats: Option<&str>, name: &str) -> ServerHandle {
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().expect("address");
    if let Some(url) = nats {
        config.cluster.enabled = true;
        config.cluster.nats_url = url.to_owned();
        config.cluster.node = name.to_owned();
        config.cluster.stream = "BENCH".to_owned();
        config.cluster.anti_entropy_secs = 0;
    }
    let db = Database::new(config.engine.clone()).expect("engine");
    db.create_table(schema()).expect("table");
    mobilesyncdb::api::start_with(config, db)
        .await
        .expect("start a node")
}

fn note(id: &str, n: i64) -> Fields {
    [
        ("id".to_owned(), Value::from(id)),
        (
            "body".to_owned(),
            Value::from(format!("note {id} with some text")),
        ),
        ("n".to_owned(), Value::from(n)),
    ]
    .into_iter()
    .collect()
}

/// `writes` inserts by `writers` writers at once, spread over the nodes'
/// databases (each answered as a client's write is: on a cluster node once
/// the stream has it and the node applied it); writes per second.
async fn throughput(nodes: &[Database], prefix: &str, writes: u64, writers: u64) -> f64 {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let db = nodes[(writer as usize) % nodes.len()].clone();
        let (next, prefix) = (Arc::clone(&next), prefix.to_owned());
        tasks.push(tokio::task::spawn_blocking(move || {
            let origin = ClientId::from(format!("writer-{writer}").as_str());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= writes {
                    return;
                }
                let id = format!("{prefix}{i}");
                db.insert(TABLE, note(&id, i as i64), &origin)
                    .expect("an insert");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    writes as f64 / started.elapsed().as_secs_f64()
}

/// CPU time a process has used (all its threads, user and system), from
/// `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    };
    let used = field(11) + field(12);
    Duration::from_secs_f64(used / ticks)
}

/// Microseconds of CPU per write while `run` makes `writes` writes, in this
/// process and in `others`.
async fn cpu_per_write<F: std::future::Future<Output = f64>>(
    others: &[u32],
    writes: u64,
    run: F,
) -> (f64, f64) {
    let used = || {
        std::iter::once(std::process::id())
            .chain(others.iter().copied())
            .map(cpu_time)
            .sum::<Duration>()
    };
    let before = used();
    let rate = run.await;
    let cpu = used().saturating_sub(before);
    (rate, cpu.as_secs_f64() * 1e6 / writes as f64)
}

fn percentile(mut values: Vec<Duration>, pct: f64) -> Duration {
    values.sort_unstable();
    let index = ((values.len() as f64 - 1.0) * pct / 100.0).round() as usize;
    values[index]
}

fn main() {
    let writes = env_number("CLUSTER_BENCH_WRITES", 20_000);
    let writers = env_number("CLUSTER_BENCH_WRITERS", 64);
    let catch_up = env_number("CLUSTER_BENCH_CATCH_UP", 100_000);
    println!("cluster figures: {writes} writes, {writers} writers");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(writers as usize + 16)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // One node on its own.
        let single = node(None, "single").await;
        let db = single.state().database().clone();
        let (one, one_cpu) =
            cpu_per_write(&[], writes, throughput(&[db], "s", writes, writers)).await;
        single.shutdown().await;
        figure("cluster_writes_per_s_1_node", one, "writes/s");

        // Three nodes and nats-server on the same cores.
        let nats = start_nats();
        let mut handles = Vec::new();
        for index in 0..3 {
            handles.push(node(Some(&nats.url), &format!("node{index}")).await);
        }
        let dbs: Vec<Database> = handles
            .iter()
            .map(|handle| handle.state().database().clone())
            .collect();
        let (three, three_cpu) = cpu_per_write(
            &[nats.child.id()],
            writes,
            throughput(&dbs, "c", writes, writers),
        )
        .await;
        figure("cluster_writes_per_s_3_nodes", three, "writes/s");
        figure("cluster_3_nodes_over_1_node", three / one, "×");
        // Every process counted: the nodes, nats-server and the writers.
        figure("cluster_cpu_us_per_write_1_node", one_cpu, "µs");
        figure("cluster_cpu_us_per_write_3_nodes", three_cpu, "µs");

        // Lag: from a write's answer on node0 to its apply on node1 and node2.
        let mut lags = Vec::new();
        let origin = ClientId::from("lag");
        for i in 0..2_000_i64 {
            let (writer, others, origin) = (dbs[0].clone(), dbs[1..].to_vec(), origin.clone());
            let lag = tokio::task::spawn_blocking(move || {
                let seq = writer
                    .insert(TABLE, note(&format!("lag{i}"), i), &origin)
                    .expect("an insert")
                    .seq
                    .expect("a sequence number");
                let answered = Instant::now();
                for other in &others {
                    assert!(
                        other.wait_for_seq(seq, Duration::from_secs(10)),
                        "not applied"
                    );
                }
                answered.elapsed()
            })
            .await
            .expect("lag sample");
            lags.push(lag);
        }
        figure(
            "cluster_replication_lag_ms_p50",
            ms(percentile(lags.clone(), 50.0)),
            "ms",
        );
        figure(
            "cluster_replication_lag_ms_p99",
            ms(percentile(lags, 99.0)),
            "ms",
        );

        // Catch-up: fill the stream to `catch_up` writes (each insert is one
        // change: the latest sequence number counts them), then start a new
        // node. Stream positions count messages, which may hold several writes.
        let have = dbs[0].latest_seq();
        if catch_up > have {
            throughput(&dbs, "f", catch_up - have, writers).await;
        }
        let cluster = handles[0]
            .state()
            .cluster()
            .cloned()
            .expect("a cluster node");
        assert!(cluster.caught_up(Duration::from_secs(60)).await);
        let target = dbs[0].latest_seq();
        let messages = cluster.status().applied_position;
        let started = Instant::now();
        let late = node(Some(&nats.url), "late").await;
        let late_db = late.state().database().clone();
        while late_db.latest_seq() < target {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.elapsed();
        assert_eq!(
            late_db.latest_seq(),
            target,
            "the new node applied the stream to another state"
        );
        println!("catch-up: {target} writes in {messages} stream messages");
        figure(
            &format!("cluster_catch_up_ms_{}k_changes", target / 1000),
            ms(took),
            "ms",
        );
        figure(
            "cluster_catch_up_writes_per_s",
            target as f64 / took.as_secs_f64(),
            "writes/s",
        );
        late.shutdown().await;
        for handle in handles {
            handle.shutdown().await;
        }
        drop(nats);
    });
}
