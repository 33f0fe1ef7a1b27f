//! Cluster nodes on a real `nats-server` (installed by `.ci/run`), all on
//! loopback: concurrent writes to three nodes converge; a node killed with
//! SIGKILL and a NATS server stopped mid-run lose nothing acknowledged; a
//! client that moves between nodes misses nothing and gets nothing twice;
//! anti-entropy repairs what the stream lost; each webhook event fires once.

#[path = "cluster/harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{
    Http, Nats, NodeSpec, Process, Scratch, create_notes, snapshot, wait_converged, wait_until_up,
};
use reqwest::Method;
use serde_json::{Value as Json, json};

/// How long the nodes may take to converge after the writes stop.
const CONVERGE: Duration = Duration::from_secs(60);

struct Cluster {
    scratch: Scratch,
    nats: Nats,
    specs: Vec<NodeSpec>,
    processes: Vec<Option<Process>>,
    nodes: Vec<Http>,
}

impl Cluster {
    /// `count` nodes on one NATS server, with the `notes` table.
    async fn start(name: &str, count: usize, durable: bool) -> Cluster {
        Cluster::start_with(name, count, durable, &[]).await
    }

    async fn start_with(name: &str, count: usize, durable: bool, settings: &[&str]) -> Cluster {
        let scratch = Scratch::new(name);
        let nats = Nats::start(&scratch.root);
        let stream = format!("T{}", std::process::id());
        let mut specs: Vec<NodeSpec> = (0..count)
            .map(|index| {
                let mut spec = NodeSpec::new(
                    &scratch.root,
                    &format!("node{index}"),
                    &nats,
                    &stream,
                    durable,
                );
                for setting in settings {
                    spec = spec.set(setting);
                }
                spec
            })
            .collect();
        let mut processes = Vec::new();
        let mut nodes = Vec::new();
        for spec in &mut specs {
            let mut process = spec.spawn();
            let http = Http::new(&spec.url());
            wait_until_up(&mut process, &http).await;
            create_notes(&http).await;
            processes.push(Some(process));
            nodes.push(http);
        }
        Cluster {
            scratch,
            nats,
            specs,
            processes,
            nodes,
        }
    }

    /// Every node holds the same records with the same histories (heads),
    /// rows and sequence numbers; the records.
    async fn assert_identical(&self) -> BTreeMap<String, (Json, Json)> {
        wait_converged(&self.nodes, CONVERGE).await;
        let first = snapshot(&self.nodes[0], "notes").await;
        for (index, node) in self.nodes.iter().enumerate().skip(1) {
            let other = snapshot(node, "notes").await;
            assert_eq!(
                first.keys().collect::<Vec<_>>(),
                other.keys().collect::<Vec<_>>(),
                "node{index} holds other records than node0"
            );
            for (id, record) in &first {
                assert_eq!(
                    Some(record),
                    other.get(id),
                    "record {id}: node0 and node{index} differ"
                );
            }
        }
        first
    }
}

/// The acknowledged writes: each record's id and the `n` it was last given.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<BTreeMap<String, i64>>>);

impl Acked {
    fn note(&self, id: &str, n: i64) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.to_owned(), n);
    }

    fn all(&self) -> BTreeMap<String, i64> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Every acknowledged write is on the node, with its value.
fn assert_has_acked(records: &BTreeMap<String, (Json, Json)>, acked: &BTreeMap<String, i64>) {
    assert!(!acked.is_empty(), "no write was acknowledged");
    for (id, n) in acked {
        let Some((_, row)) = records.get(id) else {
            panic!("acknowledged record {id} is missing");
        };
        assert_eq!(row["n"], json!(n), "record {id}: {row}");
    }
}

async fn insert(node: &Http, id: &str, n: i64) -> bool {
    let body = json!({"id": id, "body": format!("note {id}"), "n": n});
    node.send(Method::POST, "/v1/tables/notes/records", Some(&body))
        .await
        .is_ok_and(|answer| answer.status == 201)
}

async fn patch(node: &Http, id: &str, n: i64) -> bool {
    let body = json!({"n": n});
    node.send(
        Method::PATCH,
        &format!("/v1/tables/notes/records/{id}"),
        Some(&body),
    )
    .await
    .is_ok_and(|answer| answer.ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_written_at_once_converge_to_identical_records() {
    let cluster = Cluster::start("converge", 3, false).await;
    // Records every node edits at once.
    for shared in 0..5 {
        assert!(insert(&cluster.nodes[0], &format!("shared-{shared}"), 0).await);
    }
    let acked = Acked::default();
    let mut writers = Vec::new();
    for (index, node) in cluster.nodes.iter().enumerate() {
        let (node, acked) = (node.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..40_i64 {
                let id = format!("w{index}-{i}");
                if insert(&node, &id, i).await {
                    acked.note(&id, i);
                }
                // Concurrent edits of the shared records from every node.
                let shared = format!("shared-{}", i % 5);
                assert!(patch(&node, &shared, i * 10 + index as i64).await, "patch {shared} on node{index}");
                // The device's own sync push, through the sync route.
                if i % 10 == 0 {
                    let push = json!({
                        "device": format!("phone-{index}"),
                        "ops": [{"op": format!("op-{i}"), "table": "notes", "id": format!("p{index}-{i}"),
                                 "insert": true, "set": {"id": format!("p{index}-{i}"), "n": i}}],
                    });
                    let answer = node.must(Method::POST, "/v1/sync/push", Some(&push)).await;
                    assert_eq!(answer["results"][0]["status"], json!("applied"), "{answer}");
                    acked.note(&format!("p{index}-{i}"), i);
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let records = cluster.assert_identical().await;
    assert_has_acked(&records, &acked.all());
    assert_eq!(records.len(), 5 + 3 * 40 + 3 * 4);
    // A shared record shows one of the values written to it, the same on every node.
    for shared in 0..5 {
        let row = &records[&format!("shared-{shared}")].1;
        let n = row["n"].as_i64().unwrap_or(-1);
        // Written as i * 10 + node for i ≡ shared (mod 5); each node's last
        // such patch has i ≥ 35, so the insert's 0 is long superseded.
        assert!(
            n >= 350 && n % 10 < 3 && (n / 10) % 5 == shared,
            "shared-{shared}: {row}"
        );
    }
    // Health shows the peers.
    let health = cluster.nodes[0].health().await.unwrap_or(Json::Null);
    let peers: BTreeSet<&str> = health["cluster"]["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .filter_map(|peer| peer["node"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(peers, BTreeSet::from(["node1", "node2"]), "{health}");
    assert_eq!(health["cluster"]["lag"], json!(0), "{health}");
    drop(cluster.scratch);
}

/// Pulls from `node` starting at `cursor` until nothing more; the ids of the
/// records received (in order, with repeats) and the last cursor.
async fn pull_all(
    node: &Http,
    device: &str,
    mut cursor: u64,
    limit: Option<u64>,
) -> (Vec<(String, i64)>, u64) {
    let mut received = Vec::new();
    loop {
        let mut request =
            json!({"device": device, "tables": ["notes"], "cursor": cursor, "max_records": 7});
        if limit.is_some_and(|limit| received.len() as u64 >= limit) {
            return (received, cursor);
        }
        if let Some(limit) = limit {
            request["max_records"] = json!(limit.min(7));
        }
        let batch = node
            .must(Method::POST, "/v1/sync/pull", Some(&request))
            .await;
        for table in batch["tables"].as_array().cloned().unwrap_or_default() {
            for record in table["records"].as_array().cloned().unwrap_or_default() {
                let id = record["id"].as_str().unwrap_or_default().to_owned();
                let n = record["row"]["n"].as_i64().unwrap_or(-1);
                received.push((id, n));
            }
        }
        cursor = batch["next_cursor"].as_u64().expect("next_cursor");
        if batch["has_more"] != json!(true) {
            return (received, cursor);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_between_nodes_misses_nothing_and_gets_nothing_twice() {
    let cluster = Cluster::start("move", 2, false).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    for i in 0..30 {
        assert!(insert(if i % 2 == 0 { a } else { b }, &format!("n{i}"), i).await);
    }
    wait_converged(&cluster.nodes, CONVERGE).await;
    // The first 14 records from node A.
    let (first, cursor) = pull_all(a, "phone", 0, Some(14)).await;
    assert_eq!(first.len(), 14, "{first:?}");
    // Meanwhile: new records, and changes to some the phone has and some it has not.
    for i in 30..40 {
        assert!(insert(if i % 2 == 0 { a } else { b }, &format!("n{i}"), i).await);
    }
    let seen: BTreeSet<String> = first.iter().map(|(id, _)| id.clone()).collect();
    let changed_seen: Vec<String> = seen.iter().take(3).cloned().collect();
    for id in &changed_seen {
        assert!(patch(a, id, 100).await);
    }
    assert!(patch(b, "n29", 100).await || seen.contains("n29"));
    wait_converged(&cluster.nodes, CONVERGE).await;
    // The rest from node B, with A's cursor.
    let (rest, _) = pull_all(b, "phone", cursor, None).await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &rest {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        twice.is_empty(),
        "records sent twice from node B: {twice:?}"
    );
    let expected: BTreeSet<String> = (0..40)
        .map(|i| format!("n{i}"))
        .filter(|id| !seen.contains(id) || changed_seen.contains(id))
        .collect();
    let got: BTreeSet<String> = rest.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        got, expected,
        "node B sent other records than the phone lacked"
    );
    for (id, n) in &rest {
        if changed_seen.contains(id) || id == "n29" {
            assert_eq!(*n, 100, "{id} came without its change");
        }
    }
    drop(cluster.scratch);
}

/// Writes `count` records round-robin over the nodes that answer, noting the
/// acknowledged ones; `during(i)` runs before write `i`.
async fn write_through(
    nodes: &[Http],
    prefix: &str,
    count: i64,
    acked: &Acked,
    mut during: impl AsyncFnMut(i64),
) {
    for i in 0..count {
        during(i).await;
        let node = &nodes[(i as usize) % nodes.len()];
        let id = format!("{prefix}{i}");
        if insert(node, &id, i).await {
            acked.note(&id, i);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_writes_catches_up_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start("kill", 3, true).await;
    let acked = Acked::default();
    let nodes = cluster.nodes.clone();
    let specs = &mut cluster.specs;
    let processes = &mut cluster.processes;
    write_through(&nodes, "k", 300, &acked, async |i| {
        if i == 100 {
            // SIGKILL node2 in the middle of the writes.
            if let Some(mut process) = processes[2].take() {
                process.kill();
            }
        }
        if i == 200 {
            let mut process = specs[2].spawn();
            wait_until_up(&mut process, &nodes[2]).await;
            processes[2] = Some(process);
        }
    })
    .await;
    let acked = acked.all();
    // The writes to node2 while it was down were refused; all others acknowledged.
    assert!(
        acked.len() >= 260,
        "only {} writes acknowledged",
        acked.len()
    );
    let records = cluster.assert_identical().await;
    assert_has_acked(&records, &acked);
    drop(cluster.scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_nats_loses_nothing_acknowledged() {
    // Writes while NATS is down wait half a second for it, not ten.
    let mut cluster =
        Cluster::start_with("nats", 3, false, &["cluster.write_timeout_ms=500"]).await;
    let acked = Acked::default();
    let nodes = cluster.nodes.clone();
    let nats = &mut cluster.nats;
    write_through(&nodes, "s", 240, &acked, async |i| {
        if i == 80 {
            nats.stop();
        }
        if i == 120 {
            nats.spawn();
            // Give the nodes' connections time to come back.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    })
    .await;
    let acked = acked.all();
    assert!(
        acked.len() >= 150,
        "only {} writes acknowledged",
        acked.len()
    );
    assert!(
        acked.len() < 240,
        "writes were acknowledged while NATS was down"
    );
    let records = cluster.assert_identical().await;
    assert_has_acked(&records, &acked);
    drop(cluster.scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_puts_back_what_the_stream_lost() {
    let mut cluster =
        Cluster::start_with("repair", 2, false, &["cluster.anti_entropy_secs=0"]).await;
    let (a, b) = (cluster.nodes[0].clone(), cluster.nodes[1].clone());
    for i in 0..10 {
        assert!(insert(&a, &format!("r{i}"), i).await);
    }
    wait_converged(&cluster.nodes, CONVERGE).await;
    // node1 goes away; node0 takes five writes, which the stream then loses.
    if let Some(mut process) = cluster.processes[1].take() {
        process.kill();
    }
    for i in 10..15 {
        assert!(insert(&a, &format!("r{i}"), i).await);
    }
    let client = async_nats::connect(cluster.nats.url()).await.expect("NATS");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("T{}", std::process::id()))
        .await
        .expect("the stream");
    for position in 11..=15 {
        stream
            .delete_message(position)
            .await
            .expect("delete a message");
    }
    // node1 comes back in memory and replays the stream: it lacks the five.
    let mut process = cluster.specs[1].spawn();
    wait_until_up(&mut process, &b).await;
    create_notes(&b).await;
    cluster.processes[1] = Some(process);
    let started = std::time::Instant::now();
    while b
        .health()
        .await
        .and_then(|health| health["cluster"]["lag"].as_u64())
        != Some(0)
    {
        assert!(started.elapsed() < CONVERGE, "node1 did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = b
        .send(Method::GET, "/v1/tables/notes/records/r12", None)
        .await
        .expect("read");
    assert_eq!(missing.status, 404, "the stream still had the write");
    // Wait until node1 hears node0, then repair.
    while b.health().await.is_none_or(|health| {
        health["cluster"]["peers"]
            .as_array()
            .is_none_or(Vec::is_empty)
    }) {
        assert!(started.elapsed() < CONVERGE, "node1 never heard node0");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = b.must(Method::POST, "/v1/cluster/repair", None).await;
    assert_eq!(report["repaired"], json!(5), "{report}");
    assert_eq!(report["compared"], json!(15), "{report}");
    let records = cluster.assert_identical().await;
    let acked: BTreeMap<String, i64> = (0..15).map(|i| (format!("r{i}"), i)).collect();
    assert_has_acked(&records, &acked);
    // A second pass finds nothing to do.
    let again = b.must(Method::POST, "/v1/cluster/repair", None).await;
    assert_eq!(again["repaired"], json!(0), "{again}");
    drop(cluster.scratch);
}

/// A webhook receiver on loopback: the `webhook-id`s it got, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    use warp::Filter;
    let got = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&got);
    let route = warp::post()
        .and(warp::header::<String>("webhook-id"))
        .map(move |id: String| {
            noted
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(id);
            warp::reply::with_status("", warp::http::StatusCode::NO_CONTENT)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a receiver port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hooks"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_event_fires_once_in_the_cluster() {
    let cluster = Cluster::start_with(
        "webhooks",
        3,
        false,
        &["webhooks.allow_networks=[\"127.0.0.1/32\"]"],
    )
    .await;
    let (url, got) = receiver().await;
    // The same endpoint on every node: endpoints are node configuration.
    let endpoint = json!({"url": url, "events": ["record.created"], "tables": ["notes"]});
    for node in &cluster.nodes {
        node.must(Method::POST, "/v1/webhooks", Some(&endpoint))
            .await;
    }
    for i in 0..30 {
        let node = &cluster.nodes[i % 3];
        assert!(insert(node, &format!("h{i}"), i as i64).await);
    }
    wait_converged(&cluster.nodes, CONVERGE).await;
    let started = std::time::Instant::now();
    loop {
        let ids = got
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if ids.len() >= 30 {
            // A moment for any second delivery of an event to show.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let ids = got
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let unique: BTreeSet<&String> = ids.iter().collect();
            assert_eq!(
                ids.len(),
                30,
                "30 records created, {} deliveries: {ids:?}",
                ids.len()
            );
            assert_eq!(unique.len(), 30, "an event was delivered twice: {ids:?}");
            for node in 0..3 {
                let from_node = ids
                    .iter()
                    .filter(|id| id.starts_with(&format!("evt_node{node}_")))
                    .count();
                assert_eq!(from_node, 10, "node{node} delivered {from_node}: {ids:?}");
            }
            break;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "only {} deliveries: {ids:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(cluster.scratch);
}
