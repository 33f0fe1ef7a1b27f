//! End-to-end tests of the HTTP API: a real server on a loopback port, driven
//! with reqwest.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mobilesyncdb::api::{Claims, ServerHandle};
use mobilesyncdb::config::{Config, DEV_ADMIN_KEY};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;

use common::{local_config, mint_token};

const NOTES: &str = r#"{"primary_key":"id","fields":[{"name":"id","type":"string","required":true},{"name":"owner","type":"string"},{"name":"text","type":"string"}],"indexes":[{"field":"owner"}],"access":{"kind":"owner","field":"owner"}}"#;

struct Server {
    handle: ServerHandle,
    client: reqwest::Client,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}): status {} body {}",
                self.status,
                String::from_utf8_lossy(&self.bytes)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Asserts a problem document with this status and code.
    #[track_caller]
    fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert!(
            self.header("content-type")
                .is_some_and(|kind| kind.starts_with("application/problem+json")),
            "content-type {:?}",
            self.header("content-type")
        );
        let problem = self.json();
        assert_eq!(problem["code"], code, "problem: {problem}");
        assert_eq!(problem["status"], status, "problem: {problem}");
        assert_eq!(
            problem["type"],
            format!("https://mobilesyncdb.dev/problems/{code}"),
            "problem: {problem}"
        );
        assert!(problem["title"].is_string(), "problem: {problem}");
        assert!(problem["detail"].is_string(), "problem: {problem}");
        problem
    }

    #[track_caller]
    fn assert_status(&self, status: u16) -> &Answer {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        self
    }
}

fn admin() -> String {
    format!("Bearer {DEV_ADMIN_KEY}")
}

impl Server {
    async fn start(config: Config) -> Server {
        let handle = mobilesyncdb::api::start(config)
            .await
            .expect("server starts");
        Server {
            handle,
            client: reqwest::Client::new(),
        }
    }

    /// A server with the notes table, and alice's credentials on phone-a.
    async fn with_notes() -> (Server, String) {
        let server = Server::start(local_config()).await;
        server.create_notes().await;
        let alice = server.token("alice", "phone-a");
        (server, alice)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    /// `Authorization: Bearer <token>` for a fresh token of `user` on `device`.
    fn token(&self, user: &str, device: &str) -> String {
        format!("Bearer {}", mint_token(&self.handle, user, device))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        finish(request).await
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> Answer {
        self.send(Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: &str) -> Answer {
        self.send(Method::POST, path, auth, Some(body)).await
    }

    async fn latest_seq(&self) -> u64 {
        let health = self.get("/health", None).await;
        health.assert_status(200);
        health.json()["latest_seq"].as_u64().expect("latest_seq")
    }

    async fn create_notes(&self) {
        let answer = self
            .send(Method::PUT, "/v1/tables/notes", Some(&admin()), Some(NOTES))
            .await;
        answer.assert_status(201);
    }

    async fn create_note(&self, auth: &str, id: &str, text: &str) -> Answer {
        let body = json!({"id": id, "text": text}).to_string();
        let answer = self
            .post("/v1/tables/notes/records", Some(auth), &body)
            .await;
        answer.assert_status(201);
        answer
    }

    /// Every row a caller lists, following page tokens.
    async fn list_all(&self, auth: &str, page: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/v1/tables/notes/records?limit={page}");
            if let Some(token) = &token {
                path.push_str(&format!("&page_token={token}"));
            }
            let answer = self.get(&path, Some(auth)).await;
            answer.assert_status(200);
            let body = answer.json();
            let got = body["rows"].as_array().expect("rows").clone();
            assert!(got.len() <= page);
            rows.extend(got);
            match body["next_page_token"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return rows,
            }
            assert!(rows.len() < 10_000, "paging does not end");
        }
    }
}

async fn finish(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body").to_vec();
    assert!(
        headers.contains_key("x-request-id"),
        "no x-request-id on a {status} answer"
    );
    Answer {
        status,
        headers,
        bytes,
    }
}

/// An export's bytes, read as the server streams them, at most `wait` long.
async fn export_file(server: &Server, format: &str, wait: Duration) -> Result<Vec<u8>, String> {
    let request = server
        .client
        .get(server.url(&format!("/v1/export?format={format}")))
        .header("authorization", admin());
    let read = async {
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("status {}", response.status()));
        }
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| format!("the {format} export did not end within {wait:?}"))?
}

/// Works around the never-ending export (see
/// `export_streams_end_then_import_gives_the_same_rows`): reads chunks up to the
/// first trailer, then drops the connection.
async fn export_file_until_trailer(server: &Server, format: &str) -> Vec<u8> {
    let mut response = server
        .client
        .get(server.url(&format!("/v1/export?format={format}")))
        .header("authorization", admin())
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    let mut file = Vec::new();
    let end_kind = mobilesyncdb::sync::wire::MessageKind::ExportEnd as u8;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{format} export: no chunk in time after {} bytes",
                    file.len()
                )
            })
            .expect("export chunk");
        let Some(chunk) = chunk else { return file };
        file.extend_from_slice(&chunk);
        let trailer = match format {
            "ndjson" => chunk.starts_with(br#"{"type":"end""#),
            _ => chunk.len() < 256 && chunk.get(5) == Some(&end_kind),
        };
        if trailer {
            return file;
        }
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|row| row["id"].as_str().expect("id").to_owned())
        .collect()
}

fn etag_of(answer: &Answer) -> String {
    let etag = answer.header("etag").expect("ETag").to_owned();
    assert!(
        etag.len() >= 3
            && etag.starts_with('"')
            && etag.ends_with('"')
            && etag[1..etag.len() - 1].bytes().all(|b| b.is_ascii_digit()),
        "ETag {etag} is not \"<n>\""
    );
    etag
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// 1. A tour
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tour_of_records_with_etags_lists_and_queries() {
    let (server, alice) = Server::with_notes().await;

    // Create: 201, ETag, Location, the owner filled in.
    let created = server.create_note(&alice, "n1", "hello").await;
    let etag1 = etag_of(&created);
    assert_eq!(
        created.header("location"),
        Some("/v1/tables/notes/records/n1")
    );
    let row = created.json();
    assert_eq!(row["owner"], "alice");
    assert_eq!(row["text"], "hello");

    // Read: same version.
    let read = server
        .get("/v1/tables/notes/records/n1", Some(&alice))
        .await;
    read.assert_status(200);
    assert_eq!(etag_of(&read), etag1);
    assert_eq!(read.json()["text"], "hello");

    // Patch with the current ETag.
    let patched = server
        .client
        .patch(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .header("if-match", &etag1)
        .body(r#"{"text":"patched"}"#);
    let patched = finish(patched).await;
    patched.assert_status(200);
    let etag2 = etag_of(&patched);
    assert_ne!(etag2, etag1);
    assert_eq!(patched.json()["text"], "patched");
    assert_eq!(patched.json()["owner"], "alice");

    // A stale If-Match: 412 version_mismatch, nothing changed.
    let stale = server
        .client
        .patch(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .header("if-match", &etag1)
        .body(r#"{"text":"lost update"}"#);
    finish(stale).await.assert_problem(412, "version_mismatch");
    let read = server
        .get("/v1/tables/notes/records/n1", Some(&alice))
        .await;
    assert_eq!(etag_of(&read), etag2);
    assert_eq!(read.json()["text"], "patched");

    // Replace with the current ETag.
    let replaced = server
        .client
        .put(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .header("if-match", &etag2)
        .body(r#"{"owner":"alice","text":"replaced"}"#);
    let replaced = finish(replaced).await;
    replaced.assert_status(200);
    let etag3 = etag_of(&replaced);
    assert_ne!(etag3, etag2);
    assert_eq!(replaced.json()["text"], "replaced");

    // Replace with a stale ETag.
    let stale = server
        .client
        .put(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .header("if-match", &etag2)
        .body(r#"{"owner":"alice","text":"nope"}"#);
    finish(stale).await.assert_problem(412, "version_mismatch");

    // Delete: stale refused, current accepted, then gone.
    let stale = server
        .client
        .delete(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("if-match", &etag2);
    finish(stale).await.assert_problem(412, "version_mismatch");
    let deleted = server
        .client
        .delete(server.url("/v1/tables/notes/records/n1"))
        .header("authorization", &alice)
        .header("if-match", &etag3);
    finish(deleted).await.assert_status(204);
    server
        .get("/v1/tables/notes/records/n1", Some(&alice))
        .await
        .assert_problem(404, "not_found");

    // List with pagination.
    let mut expected = Vec::new();
    for n in 0..7 {
        let id = format!("p{n:02}");
        let text = if n % 2 == 0 { "even" } else { "odd" };
        server.create_note(&alice, &id, text).await;
        expected.push(id);
    }
    let listed = server.list_all(&alice, 2).await;
    assert_eq!(ids(&listed), expected);
    assert!(listed.iter().all(|row| row["owner"] == "alice"));

    // Query with a filter, descending, paged.
    let mut got = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({
            "filters": [{"field": "text", "op": "eq", "value": "even"}],
            "order_by": "id",
            "direction": "desc",
            "limit": 2,
        });
        if let Some(token) = &token {
            body["page_token"] = json!(token);
        }
        let answer = server
            .post("/v1/tables/notes/query", Some(&alice), &body.to_string())
            .await;
        answer.assert_status(200);
        let page = answer.json();
        let rows = page["rows"].as_array().unwrap().clone();
        assert!(rows.len() <= 2);
        got.extend(ids(&rows));
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
        assert!(got.len() < 100);
    }
    assert_eq!(got, ["p06", "p04", "p02", "p00"]);

    // A prefix query.
    let answer = server
        .post(
            "/v1/tables/notes/query",
            Some(&alice),
            r#"{"filters":[{"field":"id","op":"in","value":["p01","p03","zz"]}]}"#,
        )
        .await;
    answer.assert_status(200);
    assert_eq!(
        ids(answer.json()["rows"].as_array().unwrap()),
        ["p01", "p03"]
    );

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Access between users
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_never_sees_or_changes_alices_rows() {
    let (server, alice) = Server::with_notes().await;
    let bob = server.token("bob", "phone-b");
    server.create_note(&alice, "a1", "alice one").await;
    server.create_note(&alice, "a2", "alice two").await;
    server.create_note(&bob, "b1", "bob one").await;
    let before = server
        .get("/v1/tables/notes/records/a1", Some(&admin()))
        .await;
    before.assert_status(200);

    // A hidden record answers like a missing one.
    let hidden = server.get("/v1/tables/notes/records/a1", Some(&bob)).await;
    let hidden = hidden.assert_problem(404, "not_found");
    let missing = server
        .get("/v1/tables/notes/records/zz", Some(&bob))
        .await
        .assert_problem(404, "not_found");
    for key in ["type", "title", "status", "code"] {
        assert_eq!(hidden[key], missing[key], "{key}");
    }
    assert_eq!(
        hidden["detail"].as_str().unwrap().replace("a1", "ID"),
        missing["detail"].as_str().unwrap().replace("zz", "ID")
    );
    let keys = |value: &Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&hidden), keys(&missing));

    // Lists and queries hold only bob's rows.
    assert_eq!(ids(&server.list_all(&bob, 1).await), ["b1"]);
    assert_eq!(ids(&server.list_all(&alice, 10).await), ["a1", "a2"]);
    let query = server
        .post("/v1/tables/notes/query", Some(&bob), r#"{"filters":[]}"#)
        .await;
    query.assert_status(200);
    assert_eq!(ids(query.json()["rows"].as_array().unwrap()), ["b1"]);
    let query = server
        .post(
            "/v1/tables/notes/query",
            Some(&bob),
            r#"{"filters":[{"field":"owner","op":"eq","value":"alice"}]}"#,
        )
        .await;
    query.assert_status(200);
    assert_eq!(query.json()["rows"], json!([]));

    // Writes to alice's rows: 404, like a missing record.
    for method in [Method::PATCH, Method::PUT] {
        server
            .send(
                method,
                "/v1/tables/notes/records/a1",
                Some(&bob),
                Some(r#"{"text":"hacked"}"#),
            )
            .await
            .assert_problem(404, "not_found");
    }
    server
        .send(
            Method::DELETE,
            "/v1/tables/notes/records/a1",
            Some(&bob),
            None,
        )
        .await
        .assert_problem(404, "not_found");

    // Creating a row for alice: 403.
    server
        .post(
            "/v1/tables/notes/records",
            Some(&bob),
            r#"{"id":"x1","owner":"alice","text":"forged"}"#,
        )
        .await
        .assert_problem(403, "access_denied");

    // Pull: bob's rows only.
    let pull = server
        .post(
            "/v1/sync/pull",
            Some(&bob),
            r#"{"tables":["notes"],"cursor":0}"#,
        )
        .await;
    pull.assert_status(200);
    let batch = pull.json();
    let mut pulled = Vec::new();
    for table in batch["tables"].as_array().unwrap() {
        for record in table["records"].as_array().unwrap() {
            pulled.push(record["id"].as_str().unwrap().to_owned());
            assert_eq!(record["row"]["owner"], "bob", "{record}");
        }
    }
    assert_eq!(pulled, ["b1"]);

    // Push onto alice's record: rejected as not found.
    let push = server
        .post(
            "/v1/sync/push",
            Some(&bob),
            r#"{"ops":[{"op":"1","table":"notes","id":"a1","set":{"text":"hacked"}}]}"#,
        )
        .await;
    push.assert_status(200);
    let result = &push.json()["results"][0];
    assert_eq!(result["status"], "rejected", "{result}");
    assert_eq!(result["code"], "not_found", "{result}");

    // Nothing of alice's changed.
    let after = server
        .get("/v1/tables/notes/records/a1", Some(&admin()))
        .await;
    assert_eq!(after.json(), before.json());
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(
        server
            .get("/v1/tables/notes/records/x1", Some(&admin()))
            .await
            .status,
        404
    );

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. Authorization matrix
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Admin,
    User,
}

/// What another user's token gets.
#[derive(Clone, Copy, Debug)]
enum Other {
    /// 403 admin_only.
    AdminOnly,
    /// 404 (a row that is not theirs).
    NotFound,
    /// 2xx, and the body must not mention alice's rows.
    Filtered,
    /// Acts on the caller's own device only: any non-5xx answer that does
    /// not mention alice's device.
    OwnDevice,
}

struct Case {
    method: Method,
    path: String,
    /// `{who}` is replaced by the caller's user name.
    body: Option<String>,
    content_type: &'static str,
    /// A streamed answer (an export): only the status of a 2xx is read.
    head_only: bool,
    who: Who,
    other: Other,
}

fn case(method: Method, path: &str, body: Option<&str>, who: Who, other: Other) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: body.map(str::to_owned),
        content_type: "application/json",
        head_only: path.starts_with("/v1/export"),
        who,
        other,
    }
}

async fn send_case(server: &Server, case: &Case, auth: Option<&str>, user: &str) -> Answer {
    let path = case.path.replace("{who}", user);
    let mut request = server
        .client
        .request(case.method.clone(), server.url(&path));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = &case.body {
        request = request
            .header("content-type", case.content_type)
            .body(body.replace("{who}", user));
    }
    if case.head_only {
        let response = request.send().await.expect("request sent");
        if response.status().is_success() {
            assert!(response.headers().contains_key("x-request-id"));
            return Answer {
                status: response.status(),
                headers: response.headers().clone(),
                bytes: Vec::new(),
            };
        }
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body").to_vec();
        return Answer {
            status,
            headers,
            bytes,
        };
    }
    finish(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_credentials() {
    let (server, alice) = Server::with_notes().await;
    let bob = server.token("bob", "phone-b");
    server.create_note(&alice, "a1", "secret of alice").await;

    let (_, claims) = server
        .handle
        .state()
        .auth()
        .mint("alice", "phone-a", None)
        .unwrap();
    let expired = Claims {
        iat: now() - 7_200,
        exp: now() - 3_600,
        ..claims
    };
    let expired = format!(
        "Bearer {}",
        server.handle.state().auth().sign(&expired).unwrap()
    );
    let mut tampered = alice.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let bad: Vec<String> = vec![
        "Bearer not-a-token".into(),
        "Basic YWxpY2U6cHc=".into(),
        "Bearer ".into(),
        format!("Bearer {DEV_ADMIN_KEY}x"),
        tampered,
        expired,
    ];

    // A pull to acknowledge, and the file to import.
    let pull = server
        .post(
            "/v1/sync/pull",
            Some(&alice),
            r#"{"tables":["notes"],"cursor":0}"#,
        )
        .await;
    pull.assert_status(200);
    let batch = pull.json();
    let ack = json!({"cursor": batch["next_cursor"], "checksum": batch["checksum"]}).to_string();
    let export = export_file_until_trailer(&server, "ndjson").await;
    let export = String::from_utf8(export).expect("NDJSON is text");

    let mut cases = vec![
        case(Method::GET, "/metrics", None, Who::Admin, Other::AdminOnly),
        case(Method::GET, "/v1/stats", None, Who::Admin, Other::AdminOnly),
        case(
            Method::GET,
            "/v1/config",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::POST,
            "/v1/tokens",
            Some(r#"{"user":"carol","device":"tablet","ttl_secs":60}"#),
            Who::Admin,
            Other::AdminOnly,
        ),
        case(Method::GET, "/v1/tables", None, Who::User, Other::Filtered),
        case(
            Method::GET,
            "/v1/tables/notes",
            None,
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::PUT,
            "/v1/tables/notes",
            Some(NOTES),
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::PUT,
            "/v1/tables/notes/access",
            Some(r#"{"kind":"owner","field":"owner"}"#),
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::POST,
            "/v1/tables/notes/records",
            Some(r#"{"id":"m-{who}","text":"new"}"#),
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::GET,
            "/v1/tables/notes/records/a1",
            None,
            Who::User,
            Other::NotFound,
        ),
        case(
            Method::PATCH,
            "/v1/tables/notes/records/a1",
            Some(r#"{"text":"patched"}"#),
            Who::User,
            Other::NotFound,
        ),
        case(
            Method::PUT,
            "/v1/tables/notes/records/a1",
            Some(r#"{"owner":"alice","text":"replaced"}"#),
            Who::User,
            Other::NotFound,
        ),
        case(
            Method::GET,
            "/v1/tables/notes/records?limit=10",
            None,
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::POST,
            "/v1/tables/notes/query",
            Some(r#"{"filters":[],"limit":10}"#),
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::POST,
            "/v1/sync/pull",
            Some(r#"{"tables":["notes"],"cursor":0}"#),
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::POST,
            "/v1/sync/push",
            Some(
                r#"{"ops":[{"op":"op-{who}","table":"notes","id":"s-{who}","insert":true,"set":{"id":"s-{who}","owner":"{who}","text":"pushed"}}]}"#,
            ),
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::GET,
            "/v1/sync/sessions",
            None,
            Who::User,
            Other::Filtered,
        ),
        case(
            Method::DELETE,
            "/v1/sync/sessions/phone-a",
            None,
            Who::User,
            Other::NotFound,
        ),
        case(
            Method::GET,
            "/v1/export?format=ndjson",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::GET,
            "/v1/export?format=binary",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::GET,
            "/v1/policies",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::GET,
            "/v1/tables/notes/policies",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::PUT,
            "/v1/tables/notes/policies",
            Some(r#"{"policy":{"kind":"last_writer_wins"}}"#),
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::GET,
            "/v1/conflicts",
            None,
            Who::Admin,
            Other::AdminOnly,
        ),
        case(
            Method::DELETE,
            "/v1/tables/notes/records/a1",
            None,
            Who::User,
            Other::NotFound,
        ),
    ];
    let mut import = case(
        Method::POST,
        "/v1/import",
        Some(&export),
        Who::Admin,
        Other::AdminOnly,
    );
    import.content_type = "application/x-ndjson";
    cases.insert(16, import);
    // First, while alice's batch is still her latest: acknowledging it. Bob's
    // token can only acknowledge for his own device (the server accepts a
    // cursor his device was never served: checksums are checked only against
    // the batch a device was served).
    cases.insert(
        0,
        case(
            Method::POST,
            "/v1/sync/ack",
            Some(&ack),
            Who::User,
            Other::OwnDevice,
        ),
    );

    for case in &cases {
        let label = format!("{} {}", case.method, case.path);
        // No credential.
        let answer = send_case(&server, case, None, "nobody").await;
        answer.assert_problem(401, "unauthorized");
        assert!(answer.header("www-authenticate").is_some(), "{label}");
        // Malformed, unknown, tampered and expired credentials.
        for auth in &bad {
            let answer = send_case(&server, case, Some(auth), "alice").await;
            assert_eq!(
                answer.status,
                401,
                "{label} with {auth:.20}: {}",
                answer.text()
            );
            answer.assert_problem(401, "unauthorized");
        }
        // Another user's token.
        let answer = send_case(&server, case, Some(&bob), "bob").await;
        match case.other {
            Other::AdminOnly => {
                assert_eq!(answer.status, 403, "{label}: {}", answer.text());
                answer.assert_problem(403, "admin_only");
            }
            Other::NotFound => {
                assert_eq!(answer.status, 404, "{label}: {}", answer.text());
            }
            Other::OwnDevice => {
                assert!(answer.status.as_u16() < 500, "{label}: {}", answer.text());
                assert!(
                    !answer.text().contains("phone-a"),
                    "{label}: {}",
                    answer.text()
                );
            }
            Other::Filtered => {
                assert!(
                    answer.status.is_success(),
                    "{label}: {} {}",
                    answer.status,
                    answer.text()
                );
                assert!(
                    !answer.text().contains("secret of alice"),
                    "{label}: {}",
                    answer.text()
                );
                assert!(
                    !answer.text().contains("phone-a"),
                    "{label}: {}",
                    answer.text()
                );
            }
        }
        // The right credential.
        let right = match case.who {
            Who::Admin => admin(),
            Who::User => alice.clone(),
        };
        let answer = send_case(&server, case, Some(&right), "alice").await;
        assert!(
            answer.status.is_success(),
            "{label} as {:?}: {} {}",
            case.who,
            answer.status,
            answer.text()
        );
    }

    // Admin-only routes with alice's own token.
    for path in ["/metrics", "/v1/stats", "/v1/config", "/v1/export"] {
        server
            .get(path, Some(&alice))
            .await
            .assert_problem(403, "admin_only");
    }

    // Open routes.
    server.get("/health", None).await.assert_status(200);
    server.get("/openapi.json", None).await.assert_status(200);

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Malformed input
// ---------------------------------------------------------------------------

struct BodyRoute {
    method: Method,
    path: &'static str,
    admin: bool,
    valid: &'static str,
    /// The body with a field of the wrong type, and the expected status and code.
    wrong_type: (&'static str, u16, &'static str),
    unknown_field: (&'static str, u16, &'static str),
    /// An unknown table: the path (or body), status and code.
    unknown_table: Option<(&'static str, &'static str, u16, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_and_change_nothing() {
    let mut config = local_config();
    config.limits.max_json_body_bytes = 2048;
    config.limits.max_sync_body_bytes = 2048;
    let server = Server::start(config).await;
    server.create_notes().await;
    let alice = server.token("alice", "phone-a");
    server.create_note(&alice, "a1", "hello").await;
    let record = server
        .get("/v1/tables/notes/records/a1", Some(&alice))
        .await;
    let before_seq = server.latest_seq().await;

    // Envelope fields (not record fields) are read strictly by serde: a wrong
    // type or an unknown key there is a 400 `bad_json`. Record fields are checked
    // against the schema: 422 `type_mismatch` / `unknown_field`.
    let routes = [
        BodyRoute {
            method: Method::PUT,
            path: "/v1/tables/t2",
            admin: true,
            valid: NOTES,
            wrong_type: (r#"{"primary_key":5,"fields":[]}"#, 400, "bad_json"),
            unknown_field: (
                r#"{"primary_key":"id","fields":[],"colour":1}"#,
                400,
                "bad_json",
            ),
            unknown_table: None,
        },
        BodyRoute {
            method: Method::PUT,
            path: "/v1/tables/notes/access",
            admin: true,
            valid: r#"{"kind":"owner","field":"owner"}"#,
            wrong_type: (r#"{"kind":5}"#, 400, "bad_json"),
            unknown_field: (r#"{"kind":"owner","field":"owner","x":1}"#, 400, "bad_json"),
            unknown_table: Some(("/v1/tables/nope/access", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/tokens",
            admin: true,
            valid: r#"{"user":"carol","device":"d"}"#,
            wrong_type: (r#"{"user":5,"device":"d"}"#, 400, "bad_json"),
            unknown_field: (
                r#"{"user":"c","device":"d","role":"admin"}"#,
                400,
                "bad_json",
            ),
            unknown_table: None,
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/tables/notes/records",
            admin: false,
            valid: r#"{"id":"v1","text":"ok"}"#,
            wrong_type: (r#"{"id":"w1","text":5}"#, 422, "type_mismatch"),
            unknown_field: (r#"{"id":"w1","colour":"red"}"#, 422, "unknown_field"),
            unknown_table: Some(("/v1/tables/nope/records", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::PATCH,
            path: "/v1/tables/notes/records/a1",
            admin: false,
            valid: r#"{"text":"ok"}"#,
            wrong_type: (r#"{"text":[1]}"#, 422, "type_mismatch"),
            unknown_field: (r#"{"colour":"red"}"#, 422, "unknown_field"),
            unknown_table: Some(("/v1/tables/nope/records/a1", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::PUT,
            path: "/v1/tables/notes/records/a1",
            admin: false,
            valid: r#"{"owner":"alice","text":"ok"}"#,
            wrong_type: (r#"{"owner":"alice","text":true}"#, 422, "type_mismatch"),
            unknown_field: (r#"{"owner":"alice","colour":"red"}"#, 422, "unknown_field"),
            unknown_table: Some(("/v1/tables/nope/records/a1", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/tables/notes/query",
            admin: false,
            valid: r#"{"filters":[]}"#,
            wrong_type: (r#"{"limit":"ten"}"#, 400, "bad_json"),
            unknown_field: (r#"{"filters":[],"colour":1}"#, 400, "bad_json"),
            unknown_table: Some(("/v1/tables/nope/query", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/sync/pull",
            admin: false,
            valid: r#"{"tables":["notes"],"cursor":0}"#,
            wrong_type: (r#"{"tables":["notes"],"cursor":"zero"}"#, 400, "bad_json"),
            unknown_field: (r#"{"tables":["notes"],"colour":1}"#, 400, "bad_json"),
            unknown_table: Some((
                "/v1/sync/pull",
                r#"{"tables":["nope"],"cursor":0}"#,
                404,
                "unknown_table",
            )),
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/sync/push",
            admin: false,
            valid: r#"{"ops":[]}"#,
            wrong_type: (r#"{"ops":{}}"#, 400, "bad_json"),
            unknown_field: (r#"{"ops":[],"colour":1}"#, 400, "bad_json"),
            unknown_table: None,
        },
        BodyRoute {
            method: Method::PUT,
            path: "/v1/tables/notes/policies",
            admin: true,
            valid: r#"{"policy":{"kind":"last_writer_wins"}}"#,
            wrong_type: (r#"{"fields":5}"#, 400, "bad_json"),
            unknown_field: (r#"{"policy":{"kind":"max"},"colour":1}"#, 400, "bad_json"),
            unknown_table: Some(("/v1/tables/nope/policies", "", 404, "unknown_table")),
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/conflicts/1/resolve",
            admin: true,
            valid: r#"{"candidate":0}"#,
            wrong_type: (r#"{"candidate":"first"}"#, 400, "bad_json"),
            unknown_field: (r#"{"value":1,"colour":1}"#, 400, "bad_json"),
            unknown_table: None,
        },
        BodyRoute {
            method: Method::POST,
            path: "/v1/sync/ack",
            admin: false,
            valid: r#"{"cursor":0,"checksum":0}"#,
            wrong_type: (r#"{"cursor":"x","checksum":0}"#, 400, "bad_json"),
            unknown_field: (r#"{"cursor":0,"checksum":0,"colour":1}"#, 400, "bad_json"),
            unknown_table: None,
        },
    ];

    let big = format!(r#"{{"id":"big","text":"{}"}}"#, "x".repeat(4096));
    for route in &routes {
        let label = format!("{} {}", route.method, route.path);
        let auth = if route.admin { admin() } else { alice.clone() };
        let send = async |path: &str, body: String| {
            server
                .send(route.method.clone(), path, Some(&auth), Some(&body))
                .await
        };
        for invalid in ["{\"id\":", "not json", "[1,2"] {
            let answer = send(route.path, invalid.to_owned()).await;
            assert_eq!(
                answer.status,
                400,
                "{label} with {invalid:?}: {}",
                answer.text()
            );
            answer.assert_problem(400, "bad_json");
        }
        let (body, status, code) = route.wrong_type;
        let answer = send(route.path, body.to_owned()).await;
        assert_eq!(answer.status.as_u16(), status, "{label}: {}", answer.text());
        answer.assert_problem(status, code);
        let (body, status, code) = route.unknown_field;
        let answer = send(route.path, body.to_owned()).await;
        assert_eq!(answer.status.as_u16(), status, "{label}: {}", answer.text());
        answer.assert_problem(status, code);
        if let Some((path, body, status, code)) = route.unknown_table {
            let body = if body.is_empty() { route.valid } else { body };
            let answer = send(path, body.to_owned()).await;
            assert_eq!(answer.status.as_u16(), status, "{label}: {}", answer.text());
            answer.assert_problem(status, code);
        }
        // Over the body limit.
        let answer = send(route.path, big.clone()).await;
        assert_eq!(answer.status, 413, "{label}: {}", answer.text());
        answer.assert_problem(413, "body_too_large");
        // No Content-Length (a streamed, chunked body).
        let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok(route.valid)];
        let request = server
            .client
            .request(route.method.clone(), server.url(route.path))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )));
        let answer = finish(request).await;
        assert_eq!(answer.status, 411, "{label}: {}", answer.text());
        answer.assert_problem(411, "length_required");
        // A content type that is not JSON.
        let request = server
            .client
            .request(route.method.clone(), server.url(route.path))
            .header("authorization", &auth)
            .header("content-type", "text/plain")
            .body(route.valid);
        let answer = finish(request).await;
        assert_eq!(answer.status, 415, "{label}: {}", answer.text());
    }

    // Push ops with bad record fields are refused one by one.
    let push = server
        .post(
            "/v1/sync/push",
            Some(&alice),
            r#"{"ops":[
                {"op":"1","table":"notes","id":"a1","set":{"text":5}},
                {"op":"2","table":"notes","id":"a1","set":{"colour":"red"}},
                {"op":"3","table":"nope","id":"a1","set":{"text":"x"}}
            ]}"#,
        )
        .await;
    push.assert_status(200);
    let results = push.json()["results"].clone();
    assert_eq!(results[0]["status"], "rejected", "{results}");
    assert_eq!(results[0]["code"], "type_mismatch", "{results}");
    assert_eq!(results[1]["status"], "rejected", "{results}");
    assert_eq!(results[1]["code"], "unknown_field", "{results}");
    assert_eq!(results[2]["status"], "rejected", "{results}");
    assert_eq!(results[2]["code"], "unknown_table", "{results}");

    // Import: not a valid file, over the limit, wrong type.
    let import = |body: &str, kind: &str| {
        server
            .client
            .post(server.url("/v1/import"))
            .header("authorization", admin())
            .header("content-type", kind.to_owned())
            .body(body.to_owned())
    };
    let answer = finish(import("{\"id\":", "application/x-ndjson")).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("application/problem+json")
    );
    let answer = finish(import("{}", "application/json")).await;
    answer.assert_problem(415, "unsupported_media_type");

    // Nothing changed.
    assert_eq!(server.latest_seq().await, before_seq);
    let after = server
        .get("/v1/tables/notes/records/a1", Some(&alice))
        .await;
    assert_eq!(after.json(), record.json());
    assert_eq!(after.header("etag"), record.header("etag"));
    assert_eq!(
        server.get("/v1/tables/t2", Some(&admin())).await.status,
        404
    );

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Content negotiation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_answers_gzip_json_and_binary_as_asked() {
    use mobilesyncdb::sync::wire::MessageKind;
    use mobilesyncdb::sync::{PullRequest, WireScope, decode_pull_response, encode_request};

    let (server, alice) = Server::with_notes().await;
    for n in 0..40 {
        let text = format!("note number {n} with some text to make the answer large enough");
        server.create_note(&alice, &format!("n{n:02}"), &text).await;
    }
    let pull = r#"{"tables":["notes"],"cursor":0}"#;

    // gzip when accepted.
    let request = server
        .client
        .post(server.url("/v1/sync/pull"))
        .header("authorization", &alice)
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(pull);
    let answer = finish(request).await;
    answer.assert_status(200);
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    let mut decoder = flate2::read::GzDecoder::new(answer.bytes.as_slice());
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut decoder, &mut plain).expect("gzip");
    let batch: Value = serde_json::from_slice(&plain).expect("JSON inside gzip");
    let count = |batch: &Value| -> usize {
        batch["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|table| table["records"].as_array().unwrap().len())
            .sum()
    };
    assert_eq!(count(&batch), 40);

    // Plain without Accept-Encoding, or when gzip is refused.
    for accept in [None, Some("gzip;q=0"), Some("identity")] {
        let mut request = server
            .client
            .post(server.url("/v1/sync/pull"))
            .header("authorization", &alice)
            .header("content-type", "application/json")
            .body(pull);
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let answer = finish(request).await;
        answer.assert_status(200);
        assert_eq!(answer.header("content-encoding"), None, "{accept:?}");
        assert!(
            answer
                .header("content-type")
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(count(&answer.json()), 40);
    }

    // The binary protocol.
    let request = PullRequest {
        cursor: 0,
        tables: vec![WireScope::all("notes")],
        ..PullRequest::default()
    };
    let message = encode_request(MessageKind::PullRequest, &request);
    let request = server
        .client
        .post(server.url("/v1/sync/pull"))
        .header("authorization", &alice)
        .header("content-type", mobilesyncdb::api::SYNC_CONTENT_TYPE)
        .body(message);
    let answer = finish(request).await;
    answer.assert_status(200);
    assert_eq!(
        answer.header("content-type"),
        Some(mobilesyncdb::api::SYNC_CONTENT_TYPE)
    );
    let batch = decode_pull_response(&answer.bytes, 64 << 20).expect("a batch");
    assert_eq!(batch.len(), 40);
    assert!(batch.tables.iter().all(|table| table.table == "notes"));

    // A binary request answered as JSON when Accept asks for it.
    let request = PullRequest {
        cursor: 0,
        tables: vec![WireScope::all("notes")],
        ..PullRequest::default()
    };
    let request = server
        .client
        .post(server.url("/v1/sync/pull"))
        .header("authorization", &alice)
        .header("content-type", mobilesyncdb::api::SYNC_CONTENT_TYPE)
        .header("accept", "application/json")
        .body(encode_request(MessageKind::PullRequest, &request));
    let answer = finish(request).await;
    answer.assert_status(200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );

    // A binary refusal: an unknown table.
    let request = PullRequest {
        cursor: 0,
        tables: vec![WireScope::all("nope")],
        ..PullRequest::default()
    };
    let request = server
        .client
        .post(server.url("/v1/sync/pull"))
        .header("authorization", &alice)
        .header("content-type", mobilesyncdb::api::SYNC_CONTENT_TYPE)
        .body(encode_request(MessageKind::PullRequest, &request));
    let answer = finish(request).await;
    assert_eq!(answer.status, 404);
    let refused = decode_pull_response(&answer.bytes, 64 << 20).expect_err("a refusal");
    assert_eq!(refused.code(), Some("unknown_table"));

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Rate limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_requests_over_the_burst_get_429() {
    let mut config = local_config();
    config.limits.requests_per_second = 1;
    config.limits.burst = 3;
    let server = Server::start(config).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let answer = server.get("/v1/tables", Some(&admin())).await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200]);
    let fourth = server.get("/v1/tables", Some(&admin())).await;
    fourth.assert_problem(429, "rate_limited");
    let retry: u64 = fourth
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    // Another credential has its own budget.
    let alice = server.token("alice", "phone-a");
    server
        .get("/v1/tables", Some(&alice))
        .await
        .assert_status(200);

    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. OpenAPI
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let server = Server::start(local_config()).await;
    let answer = server.get("/openapi.json", None).await;
    answer.assert_status(200);
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let document = answer.json();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    let expected: &[(&str, &[&str])] = &[
        ("/health", &["get"]),
        ("/openapi.json", &["get"]),
        ("/metrics", &["get"]),
        ("/v1/stats", &["get"]),
        ("/v1/config", &["get"]),
        ("/v1/tokens", &["post"]),
        ("/v1/tables", &["get"]),
        ("/v1/tables/{table}", &["get", "put"]),
        ("/v1/tables/{table}/access", &["put"]),
        ("/v1/tables/{table}/policies", &["get", "put"]),
        ("/v1/policies", &["get"]),
        ("/v1/conflicts", &["get"]),
        ("/v1/conflicts/{id}", &["get"]),
        ("/v1/conflicts/{id}/resolve", &["post"]),
        ("/v1/tables/{table}/records", &["get", "post"]),
        (
            "/v1/tables/{table}/records/{id}",
            &["get", "patch", "put", "delete"],
        ),
        ("/v1/tables/{table}/query", &["post"]),
        ("/v1/sync/pull", &["post"]),
        ("/v1/sync/push", &["post"]),
        ("/v1/sync/ack", &["post"]),
        ("/v1/sync/stream", &["get"]),
        ("/v1/sync/sessions", &["get"]),
        ("/v1/sync/sessions/{device}", &["delete"]),
        ("/v1/export", &["get"]),
        ("/v1/import", &["post"]),
    ];
    for (path, methods) in expected {
        let item = paths.get(*path).unwrap_or_else(|| {
            panic!(
                "{path} missing; have {:?}",
                paths.keys().collect::<Vec<_>>()
            )
        });
        for method in *methods {
            assert!(item.get(*method).is_some(), "{method} {path}");
        }
    }
    server.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 8. Export and import
// ---------------------------------------------------------------------------

/// The export body ends after its trailer (a regression: the trailer was once
/// yielded forever), and the whole file imports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_end_then_import_gives_the_same_rows() {
    export_import_roundtrip(true).await;
}

/// The same round trip, reading the export only up to its first trailer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_the_same_rows() {
    export_import_roundtrip(false).await;
}

async fn export_import_roundtrip(strict: bool) {
    let (source, alice) = Server::with_notes().await;
    let bob = source.token("bob", "phone-b");
    for n in 0..12 {
        let who = if n % 3 == 0 { &bob } else { &alice };
        source
            .create_note(who, &format!("r{n:02}"), &format!("text {n}"))
            .await;
    }
    source
        .send(
            Method::PATCH,
            "/v1/tables/notes/records/r01",
            Some(&alice),
            Some(r#"{"text":"changed"}"#),
        )
        .await
        .assert_status(200);
    source
        .send(
            Method::DELETE,
            "/v1/tables/notes/records/r02",
            Some(&alice),
            None,
        )
        .await
        .assert_status(204);
    let rows = source.list_all(&admin(), 5).await;
    assert_eq!(rows.len(), 11);

    for (format, content_type) in [
        ("ndjson", "application/x-ndjson"),
        ("binary", "application/vnd.mobilesyncdb.export"),
    ] {
        let head = source
            .client
            .get(source.url(&format!("/v1/export?format={format}")))
            .header("authorization", admin())
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()
                .get("content-type")
                .unwrap()
                .to_str()
                .unwrap(),
            content_type
        );
        drop(head);
        let file = if strict {
            export_file(&source, format, Duration::from_secs(5))
                .await
                .unwrap_or_else(|error| panic!("{error}"))
        } else {
            export_file_until_trailer(&source, format).await
        };

        let target = Server::start(local_config()).await;
        let import = |file: Vec<u8>| {
            target
                .client
                .post(target.url("/v1/import"))
                .header("authorization", admin())
                .header("content-type", content_type)
                .body(file)
        };
        let first = finish(import(file.clone())).await;
        first.assert_status(200);
        let report = first.json();
        // 11 live records and the deleted one's document.
        assert_eq!(report["records"].as_u64(), Some(12), "{format}: {report}");
        assert_eq!(report["changed"].as_u64(), Some(12), "{format}: {report}");
        assert_eq!(
            report["created_tables"],
            json!(["notes"]),
            "{format}: {report}"
        );
        assert_eq!(target.list_all(&admin(), 5).await, rows, "{format}");
        target
            .get("/v1/tables/notes/records/r02", Some(&admin()))
            .await
            .assert_problem(404, "not_found");
        for row in &rows {
            let id = row["id"].as_str().unwrap();
            let path = format!("/v1/tables/notes/records/{id}");
            let theirs = target.get(&path, Some(&admin())).await;
            let ours = source.get(&path, Some(&admin())).await;
            assert_eq!(theirs.json(), ours.json(), "{format} {id}");
        }
        // Access rules travel with the file.
        let target_alice = target.token("alice", "phone-a");
        let theirs = target.list_all(&target_alice, 50).await;
        assert_eq!(theirs.len(), 7, "{format}");
        assert!(theirs.iter().all(|row| row["owner"] == "alice"));

        let again = finish(import(file)).await;
        again.assert_status(200);
        let report = again.json();
        assert_eq!(report["changed"].as_u64(), Some(0), "{format}: {report}");
        assert_eq!(target.list_all(&admin(), 5).await, rows, "{format}");
        target.handle.shutdown().await;
    }
    source.handle.shutdown().await;
}

// ---------------------------------------------------------------------------
// 9. Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_then_refuses() {
    let (source, alice) = Server::with_notes().await;
    for n in 0..5 {
        source.create_note(&alice, &format!("g{n}"), "text").await;
    }
    let file = export_file_until_trailer(&source, "ndjson").await;
    source.handle.shutdown().await;

    let server = Server::start(local_config()).await;
    let url = server.handle.url();
    let (first, rest) = file.split_at(file.len() / 2);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    // An import whose body arrives slowly: in flight while the server stops.
    let body = futures_util::stream::unfold(0, move |step| {
        let (first, rest) = (first.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(first), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    Some((Ok(rest), 2))
                }
                _ => None,
            }
        }
    });
    let request = server
        .client
        .post(server.url("/v1/import"))
        .header("authorization", admin())
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(body));
    let in_flight = tokio::spawn(finish(request));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    server.handle.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "shutdown did not wait"
    );
    let answer = in_flight.await.expect("request task");
    answer.assert_status(200);
    assert_eq!(answer.json()["changed"].as_u64(), Some(5));

    // No connection after shutdown (a fresh client: no pooled connection).
    let error = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await
        .expect_err("refused");
    assert!(error.is_connect(), "{error}");
}
