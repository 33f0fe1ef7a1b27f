//! A cluster on loopback: one `nats-server` with JetStream and several
//! `mobilesyncdb serve` processes, each on its own port (and data directory),
//! all started and stopped by the test.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mobilesyncdb::config::DEV_ADMIN_KEY;
use reqwest::Method;
use serde_json::{Value as Json, json};

/// How long a process may take to come up.
const START_GIVE_UP: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// The scratch directory of one test: removed when it passes, kept (and
/// named) when it fails.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let root = std::env::temp_dir().join(format!(
            "msdb-cluster-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).expect("create the scratch directory");
        Scratch { root }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "cluster harness: kept the data and logs in {}",
                self.root.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A running process, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (a clean stop), and wait for it to be gone.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "exited ({status}); log {}:\n{}",
                self.log.display(),
                log_tail(&self.log)
            )),
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `nats-server` with JetStream, on its own port and store directory.
pub struct Nats {
    pub port: u16,
    store: PathBuf,
    logs: PathBuf,
    starts: usize,
    pub process: Option<Process>,
}

impl Nats {
    pub fn start(root: &Path) -> Nats {
        let mut nats = Nats {
            port: free_port(),
            store: root.join("nats"),
            logs: root.to_owned(),
            starts: 0,
            process: None,
        };
        nats.spawn();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), on the same port and store.
    pub fn spawn(&mut self) {
        let log = self.logs.join(format!("nats-{}.log", self.starts));
        self.starts += 1;
        let output = File::create(&log).expect("create the NATS log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log handle"))
            .stderr(output)
            .spawn()
            .expect("start nats-server (installed by .ci/run: apt-get install -y nats-server)");
        let mut process = Process { child, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(exit) = process.exited() {
                panic!("nats-server {exit}");
            }
            assert!(
                started.elapsed() < START_GIVE_UP,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
    }

    /// A clean stop (what `systemctl restart` does).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate();
        }
    }
}

/// How to start one node: always the same name, port and data directory.
pub struct NodeSpec {
    pub name: String,
    pub port: u16,
    data_dir: Option<PathBuf>,
    logs: PathBuf,
    nats: String,
    stream: String,
    extra: Vec<String>,
    starts: usize,
}

impl NodeSpec {
    pub fn new(root: &Path, name: &str, nats: &Nats, stream: &str, durable: bool) -> NodeSpec {
        NodeSpec {
            name: name.to_owned(),
            port: free_port(),
            data_dir: durable.then(|| root.join(name)),
            logs: root.to_owned(),
            nats: nats.url(),
            stream: stream.to_owned(),
            extra: Vec::new(),
            starts: 0,
        }
    }

    /// Another `--set` for this node.
    pub fn set(mut self, setting: &str) -> NodeSpec {
        self.extra.push(setting.to_owned());
        self
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) -> Process {
        let log = self.logs.join(format!("{}-{}.log", self.name, self.starts));
        self.starts += 1;
        let output = File::create(&log).expect("create a node log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mobilesyncdb"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port));
        if let Some(dir) = &self.data_dir {
            command.arg("--data-dir").arg(dir);
        }
        let settings = [
            "cluster.enabled=true".to_owned(),
            format!("cluster.nats_url=\"{}\"", self.nats),
            format!("cluster.node=\"{}\"", self.name),
            format!("cluster.stream=\"{}\"", self.stream),
            "cluster.heartbeat_ms=200".to_owned(),
            "limits.requests_per_second=1000000".to_owned(),
            "limits.burst=1000000".to_owned(),
            "access.notes={kind=\"shared\"}".to_owned(),
        ];
        for setting in settings.iter().chain(&self.extra) {
            command.arg("--set").arg(setting);
        }
        command
            .env("RUST_LOG", "mobilesyncdb=info,warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log handle"))
            .stderr(output);
        for (name, _) in std::env::vars() {
            if name.starts_with("MSDB_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().expect("start mobilesyncdb serve");
        Process { child, log }
    }
}

/// An HTTP answer: status and JSON body (null when not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Json,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Requests to one node.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    pub base: String,
}

impl Http {
    pub fn new(base: &str) -> Http {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("HTTP client");
        Http {
            client,
            base: base.to_owned(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(DEV_ADMIN_KEY);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
        Ok(Answer { status, body })
    }

    /// A request that must succeed.
    pub async fn must(&self, method: Method, path: &str, body: Option<&Json>) -> Json {
        let answer = self
            .send(method.clone(), path, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {}{path}: {error}", self.base));
        assert!(
            answer.ok(),
            "{method} {}{path}: {} {}",
            self.base,
            answer.status,
            answer.body
        );
        answer.body
    }

    pub async fn health(&self) -> Option<Json> {
        let answer = self.send(Method::GET, "/health", None).await.ok()?;
        answer.ok().then_some(answer.body)
    }
}

/// Waits until the node answers `/health` as a connected cluster node.
pub async fn wait_until_up(process: &mut Process, http: &Http) {
    let started = Instant::now();
    loop {
        if let Some(exit) = process.exited() {
            panic!("node {exit}");
        }
        if let Some(health) = http.health().await
            && health["cluster"]["connected"] == json!(true)
        {
            return;
        }
        assert!(
            started.elapsed() < START_GIVE_UP,
            "the node did not come up in {START_GIVE_UP:?}; log {}:\n{}",
            process.log.display(),
            log_tail(&process.log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The table the cluster tests write.
pub async fn create_notes(http: &Http) {
    let definition = json!({
        "primary_key": "id",
        "fields": [
            {"name": "id", "type": "string", "required": true},
            {"name": "body", "type": "string"},
            {"name": "n", "type": "integer"},
            {"name": "likes", "type": "counter"},
        ],
    });
    http.must(Method::PUT, "/v1/tables/notes", Some(&definition))
        .await;
}

/// Waits until every node has applied the whole stream (the same position,
/// no lag) and shows the same latest sequence number; that position.
pub async fn wait_converged(nodes: &[Http], give_up: Duration) -> u64 {
    let started = Instant::now();
    let mut last = Vec::new();
    loop {
        last.clear();
        for node in nodes {
            last.push(node.health().await.unwrap_or(Json::Null));
        }
        let positions: Vec<Option<u64>> = last
            .iter()
            .map(|health| health["cluster"]["applied_position"].as_u64())
            .collect();
        let streams: Vec<Option<u64>> = last
            .iter()
            .map(|health| health["cluster"]["stream_position"].as_u64())
            .collect();
        let seqs: Vec<Option<u64>> = last
            .iter()
            .map(|health| health["latest_seq"].as_u64())
            .collect();
        let same = |values: &[Option<u64>]| {
            values
                .iter()
                .all(|value| value.is_some() && *value == values[0])
        };
        if same(&positions) && same(&seqs) && positions == streams {
            return positions[0].unwrap_or(0);
        }
        assert!(
            started.elapsed() < give_up,
            "the nodes did not converge in {give_up:?}: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A table's records on one node, by id: each record's heads (its whole
/// history, by hash) and its visible row.
pub async fn snapshot(
    node: &Http,
    table: &str,
) -> std::collections::BTreeMap<String, (Json, Json)> {
    let mut heads = std::collections::BTreeMap::new();
    let mut from = Some(0);
    while let Some(start) = from {
        let page = node
            .must(
                Method::GET,
                &format!("/v1/cluster/heads?table={table}&from={start}"),
                None,
            )
            .await;
        for record in page["records"].as_array().cloned().unwrap_or_default() {
            let id = record["id"].as_str().unwrap_or_default().to_owned();
            heads.insert(id, record["heads"].clone());
        }
        from = page["next"].as_u64();
    }
    let mut records = std::collections::BTreeMap::new();
    for (id, heads) in heads {
        let answer = node
            .send(
                Method::GET,
                &format!("/v1/tables/{table}/records/{id}"),
                None,
            )
            .await
            .expect("read a record");
        // A deleted record answers 404, whose problem names the request.
        let row = if answer.ok() {
            answer.body
        } else {
            json!(answer.status)
        };
        records.insert(id, (heads, row));
    }
    records
}
