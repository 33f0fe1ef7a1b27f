//! Conflict management end to end: two phones (reference clients) edit the
//! same field offline, then sync; the field's policy (set over REST) decides
//! what every replica shows and the conflict log records what happened. One
//! test per policy, 50 phones at once, pagination and retention of the log,
//! durability across a restart, policy changes at run time, bad requests.

use std::path::Path;
use std::sync::Arc;

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::client::{Client, ClientConfig, InProcess};
use mobilesyncdb::config::{
    Config, DEV_ADMIN_KEY, EngineConfig, FsyncPolicy, KeepPolicy, StorageConfig, SyncConfig,
};
use mobilesyncdb::crdt::{ClientId, Custom, Edit, Resolution, Value};
use mobilesyncdb::engine::{
    ConflictFilter, Database, EventKind, FullAccess, ManualClock, PolicyChange, WallClock,
};
use mobilesyncdb::schema::{FieldSpec, FieldType, TableSchema};
use mobilesyncdb::storage::{Store, StoreOptions};
use serde_json::{Value as Json, json};

mod common;

use common::{TempDir, client_config, fields, local_config, sync_server};

const T0: u64 = 1_750_000_000_000;
const TABLE: &str = "notes";

fn notes() -> TableSchema {
    TableSchema::new(TABLE, "id")
        .field(FieldSpec::new("title", FieldType::String))
        .field(FieldSpec::new("score", FieldType::Integer))
        .field(FieldSpec::new("tags", FieldType::Json))
        .field(FieldSpec::new("body", FieldType::String))
}

/// The custom policy the tests register: the longest text wins (ties: the
/// greatest text), so both phones' words are never cut to the shorter one.
fn longest_text() -> Custom {
    Custom::new("longest_text", |conflict| {
        let longest = conflict
            .candidates()
            .iter()
            .filter_map(|candidate| match &candidate.value {
                Value::Str(text) => Some(text.clone()),
                _ => None,
            })
            .max_by(|left, right| left.len().cmp(&right.len()).then(left.cmp(right)));
        Resolution::settled(longest.map_or(Value::Null, Value::Str))
    })
}

type Phone = Client<InProcess>;

/// A database on a manual clock with the `notes` table holding `n1`, an HTTP
/// server on it, and REST helpers with the admin key.
struct Harness {
    clock: Arc<ManualClock>,
    db: Database,
    server: ServerHandle,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(EngineConfig::default()).await
    }

    async fn start_with(engine: EngineConfig) -> Harness {
        let clock = ManualClock::at(T0);
        let db = Database::with_clock(engine, Arc::clone(&clock) as Arc<dyn WallClock>)
            .expect("engine config");
        db.register_policy(Arc::new(longest_text()))
            .expect("a new name");
        db.create_table(notes()).expect("table");
        db.insert(
            TABLE,
            fields(&[
                ("id", Value::str("n1")),
                ("title", Value::str("groceries")),
                ("score", Value::Int(1)),
                ("tags", Value::List(vec![Value::str("home")].into())),
                ("body", Value::str("milk")),
            ]),
            &ClientId::from("admin"),
        )
        .expect("insert");
        let config: Config = local_config();
        let server = mobilesyncdb::api::start_with(config, db.clone())
            .await
            .expect("server");
        Harness {
            clock,
            db,
            server,
            http: reqwest::Client::new(),
        }
    }

    fn phone(&self, device: &str) -> Phone {
        let config = client_config(device, TABLE, Arc::clone(&self.clock) as Arc<dyn WallClock>);
        Client::new(config, InProcess::new(sync_server(&self.db))).expect("client")
    }

    /// A REST request with the admin key (or `auth`): status and JSON body.
    async fn request_as(
        &self,
        auth: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url()))
            .header("authorization", format!("Bearer {auth}"));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = if text.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, json)
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Json>,
    ) -> (u16, Json) {
        self.request_as(DEV_ADMIN_KEY, method, path, body).await
    }

    async fn get(&self, path: &str) -> Json {
        let (status, json) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {json}");
        json
    }

    /// Sets policies over REST; answers the table's policies.
    async fn set_policies(&self, body: Json) -> Json {
        let (status, json) = self
            .request(
                reqwest::Method::PUT,
                &format!("/v1/tables/{TABLE}/policies"),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "PUT policies: {json}");
        json
    }

    async fn conflicts(&self, query: &str) -> Json {
        self.get(&format!("/v1/conflicts{query}")).await
    }

    fn server_value(&self, field: &str) -> Value {
        let row = self.db.get(TABLE, "n1").expect("read").expect("live");
        row.get(self.db.field_position(TABLE, field).expect("field"))
    }

    /// Two phones that hold `n1`.
    async fn two_phones(&self, a: &str, b: &str) -> (Phone, Phone) {
        let (a, b) = (self.phone(a), self.phone(b));
        a.pull_all().await.expect("pull");
        b.pull_all().await.expect("pull");
        (a, b)
    }

    /// Phone A writes `field = a` offline, one second later phone B writes
    /// `field = b` offline; then A, B and A again sync.
    async fn concurrent_edit(&self, a: &Phone, b: &Phone, field: &str, va: Value, vb: Value) {
        self.clock.advance(1_000);
        a.update(TABLE, "n1", fields(&[(field, va)]))
            .await
            .expect("offline edit on A");
        self.clock.advance(1_000);
        b.update(TABLE, "n1", fields(&[(field, vb)]))
            .await
            .expect("offline edit on B");
        a.sync().await.expect("A syncs");
        b.sync().await.expect("B syncs");
        a.sync().await.expect("A syncs again");
    }
}

fn shown(phone: &Phone, field: &str) -> Value {
    phone
        .get(TABLE, "n1")
        .and_then(|row| row.get(field).cloned())
        .unwrap_or(Value::Null)
}

/// Both phones show `expected` for `field`, as the server does.
fn assert_everyone_shows(h: &Harness, phones: &[&Phone], field: &str, expected: &Value) {
    assert_eq!(&h.server_value(field), expected, "server's {field}");
    for phone in phones {
        assert_eq!(
            &shown(phone, field),
            expected,
            "{}'s {field}",
            phone.config().device
        );
        assert!(!phone.is_pending(TABLE, "n1"));
    }
}

/// The only conflict on `field`: its JSON.
async fn only_conflict(h: &Harness, field: &str) -> Json {
    let page = h
        .conflicts(&format!("?table={TABLE}&record=n1&field={field}"))
        .await;
    let conflicts = page["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{page:#}");
    assert!(page["next"].is_null());
    conflicts[0].clone()
}

/// A two-phone conflict under `policy` on `field`: what the conflict record says.
async fn two_phone_conflict(
    field: &str,
    policy: Json,
    va: Value,
    vb: Value,
    expected: Value,
) -> Json {
    let h = Harness::start().await;
    let answer = h.set_policies(json!({"fields": {field: policy}})).await;
    assert_eq!(answer["field_policies"][field], policy, "{answer}");
    let (a, b) = h.two_phones("phone-a", "phone-b").await;
    h.concurrent_edit(&a, &b, field, va.clone(), vb.clone())
        .await;
    assert_everyone_shows(&h, &[&a, &b], field, &expected);
    let conflict = only_conflict(&h, field).await;
    let candidates = conflict["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2, "{conflict:#}");
    // Oldest first: A's write one second before B's, each with its writer and stamp.
    assert_eq!(candidates[0]["writer"], "phone-a", "{conflict:#}");
    assert_eq!(candidates[1]["writer"], "phone-b", "{conflict:#}");
    assert_eq!(candidates[0]["stamp"]["ms"], T0 + 1_000, "{conflict:#}");
    assert_eq!(candidates[1]["stamp"]["ms"], T0 + 2_000, "{conflict:#}");
    assert!(candidates[0]["op"].as_str().expect("op").contains('@'));
    assert_eq!(
        candidates[0]["value"],
        mobilesyncdb::schema::value_to_json(&va)
    );
    assert_eq!(
        candidates[1]["value"],
        mobilesyncdb::schema::value_to_json(&vb)
    );
    assert_eq!(
        conflict["chosen"],
        mobilesyncdb::schema::value_to_json(&expected)
    );
    assert_eq!(conflict["table"], TABLE);
    assert_eq!(conflict["record"], "n1");
    assert_eq!(conflict["field"], field);
    assert!(conflict["seq"].as_u64().expect("seq") > 0);
    let by_id = h.get(&format!("/v1/conflicts/{}", conflict["id"])).await;
    assert_eq!(by_id, conflict);
    println!("{field} under {policy}: {conflict:#}");
    h.server.shutdown().await;
    conflict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_writer_wins_shows_the_later_write() {
    let conflict = two_phone_conflict(
        "title",
        json!({"kind": "last_writer_wins"}),
        Value::str("groceries for monday"),
        Value::str("groceries (B)"),
        Value::str("groceries (B)"),
    )
    .await;
    assert_eq!(conflict["policy"], "last_writer_wins");
    assert_eq!(conflict["open"], false);
    assert!(conflict["resolution"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_priority_prefers_the_ranked_writer_even_when_older() {
    let conflict = two_phone_conflict(
        "title",
        json!({"kind": "client_priority", "ranking": ["phone-a", "phone-b"]}),
        Value::str("from the manager's phone"),
        Value::str("from the intern's phone"),
        Value::str("from the manager's phone"),
    )
    .await;
    assert_eq!(conflict["policy"], "client_priority");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_priority_falls_back_to_the_later_write_for_unranked_writers() {
    let h = Harness::start().await;
    h.set_policies(json!({"fields": {"title": {"kind": "client_priority", "ranking": ["boss"]}}}))
        .await;
    let (c, d) = h.two_phones("phone-c", "phone-d").await;
    h.concurrent_edit(&c, &d, "title", Value::str("c"), Value::str("d"))
        .await;
    assert_everyone_shows(&h, &[&c, &d], "title", &Value::str("d"));
    // The ranked writer beats both, though it wrote first.
    let boss = h.phone("boss");
    boss.pull_all().await.expect("pull");
    h.clock.advance(1_000);
    boss.update(TABLE, "n1", fields(&[("title", Value::str("boss"))]))
        .await
        .expect("edit");
    h.clock.advance(1_000);
    c.update(TABLE, "n1", fields(&[("title", Value::str("c again"))]))
        .await
        .expect("edit");
    boss.sync().await.expect("sync");
    c.sync().await.expect("sync");
    d.sync().await.expect("sync");
    boss.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&boss, &c, &d], "title", &Value::str("boss"));
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_shows_the_greatest_value() {
    let conflict = two_phone_conflict(
        "score",
        json!({"kind": "max"}),
        Value::Int(9),
        Value::Int(4),
        Value::Int(9),
    )
    .await;
    assert_eq!(conflict["policy"], "max");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_shows_the_least_value() {
    let conflict = two_phone_conflict(
        "score",
        json!({"kind": "min"}),
        Value::Int(4),
        Value::Int(9),
        Value::Int(4),
    )
    .await;
    assert_eq!(conflict["policy"], "min");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sum_adds_the_concurrent_values() {
    let conflict = two_phone_conflict(
        "score",
        json!({"kind": "sum"}),
        Value::Int(5),
        Value::Int(7),
        Value::Int(12),
    )
    .await;
    assert_eq!(conflict["policy"], "sum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_union_keeps_every_item_of_both_lists() {
    let list = |items: &[&str]| {
        Value::List(
            items
                .iter()
                .map(|item| Value::str(*item))
                .collect::<Vec<_>>()
                .into(),
        )
    };
    let conflict = two_phone_conflict(
        "tags",
        json!({"kind": "set_union"}),
        list(&["home", "urgent"]),
        list(&["home", "weekend"]),
        list(&["home", "urgent", "weekend"]),
    )
    .await;
    assert_eq!(conflict["policy"], "set_union");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_policy_registered_in_rust_is_selected_over_rest() {
    let h = Harness::start().await;
    let catalog = h.get("/v1/policies").await;
    assert_eq!(catalog["custom"], json!(["longest_text"]));
    assert!(
        catalog["builtin"]
            .as_array()
            .expect("builtin")
            .contains(&json!("set_union"))
    );
    h.server.shutdown().await;
    let conflict = two_phone_conflict(
        "body",
        json!({"kind": "custom", "name": "longest_text"}),
        Value::str("milk, eggs and flour"),
        Value::str("milk, eggs"),
        Value::str("milk, eggs and flour"),
    )
    .await;
    assert_eq!(conflict["policy"], "longest_text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_conflicts_stay_open_until_resolved_over_rest() {
    let h = Harness::start().await;
    h.set_policies(json!({"fields": {"title": {"kind": "manual"}}}))
        .await;
    let (a, b) = h.two_phones("phone-a", "phone-b").await;
    h.concurrent_edit(
        &a,
        &b,
        "title",
        Value::str("A's title"),
        Value::str("B's title"),
    )
    .await;
    // The provisional value is last-writer-wins', on every replica.
    assert_everyone_shows(&h, &[&a, &b], "title", &Value::str("B's title"));
    let open = h.conflicts("?open=true").await;
    let listed = open["conflicts"].as_array().expect("conflicts");
    assert_eq!(listed.len(), 1, "{open:#}");
    let conflict = &listed[0];
    assert_eq!(conflict["open"], true);
    assert_eq!(conflict["policy"], "manual");
    assert_eq!(conflict["chosen"], "B's title");
    assert!(conflict["resolution"].is_null());
    assert_eq!(h.db.open_conflicts(TABLE).expect("table"), ["n1"]);

    // Resolve with A's value, by candidate index.
    let id = conflict["id"].as_u64().expect("id");
    let (status, closed) = h
        .request(
            reqwest::Method::POST,
            &format!("/v1/conflicts/{id}/resolve"),
            Some(json!({"candidate": 0})),
        )
        .await;
    assert_eq!(status, 200, "{closed:#}");
    assert_eq!(closed["open"], false, "closed");
    assert_eq!(closed["policy"], "manual");
    assert_eq!(closed["resolution"]["value"], "A's title", "{closed:#}");
    assert_eq!(closed["resolution"]["by"], "admin");
    assert!(closed["resolution"]["seq"].as_u64().is_some());
    assert!(closed["resolution"]["superseded_by"].is_null());
    println!("resolved: {closed:#}");
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&a, &b], "title", &Value::str("A's title"));
    let open = h.conflicts("?open=true").await;
    assert_eq!(open["conflicts"], json!([]), "{open:#}");
    assert!(h.db.open_conflicts(TABLE).expect("table").is_empty());
    assert_eq!(h.get(&format!("/v1/conflicts/{id}")).await, closed);

    // A closed conflict cannot be resolved again; unknown ones are 404.
    let (status, problem) = h
        .request(
            reqwest::Method::POST,
            &format!("/v1/conflicts/{id}/resolve"),
            Some(json!({"value": "again"})),
        )
        .await;
    assert_eq!((status, &problem["code"]), (409, &json!("conflict_closed")));
    let (status, problem) = h
        .request(
            reqwest::Method::POST,
            "/v1/conflicts/999/resolve",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (404, &json!("unknown_conflict"))
    );
    let (status, problem) = h
        .request(reqwest::Method::GET, "/v1/conflicts/999", None)
        .await;
    assert_eq!(
        (status, &problem["code"]),
        (404, &json!("unknown_conflict"))
    );
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_takes_a_typed_value_and_refuses_bad_bodies() {
    let h = Harness::start().await;
    h.set_policies(json!({"fields": {"score": {"kind": "manual"}}}))
        .await;
    let (a, b) = h.two_phones("phone-a", "phone-b").await;
    h.concurrent_edit(&a, &b, "score", Value::Int(3), Value::Int(8))
        .await;
    let conflict = only_conflict(&h, "score").await;
    let path = format!("/v1/conflicts/{}/resolve", conflict["id"]);
    for (body, status, code) in [
        (json!({"value": "three"}), 422, "type_mismatch"),
        (json!({"candidate": 2}), 400, "bad_candidate"),
        (json!({"value": 1, "candidate": 0}), 400, "bad_resolution"),
        (json!({}), 400, "bad_resolution"),
        (json!({"value": 1, "colour": 2}), 400, "bad_json"),
    ] {
        let (got, problem) = h
            .request(reqwest::Method::POST, &path, Some(body.clone()))
            .await;
        assert_eq!(
            (got, &problem["code"]),
            (status, &json!(code)),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        h.conflicts("?open=true").await["conflicts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (status, closed) = h
        .request(reqwest::Method::POST, &path, Some(json!({"value": 5})))
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["resolution"]["value"], 5);
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&a, &b], "score", &Value::Int(5));
    h.server.shutdown().await;
}

/// 50 phones hold `n1`, each edits `title` offline (one millisecond apart),
/// all push at once from their own tasks, then all pull.
async fn fifty_phones(h: &Harness) -> Vec<Arc<Phone>> {
    let mut phones = Vec::new();
    for n in 0..50 {
        let phone = h.phone(&format!("phone-{n:02}"));
        phone.pull_all().await.expect("pull");
        phones.push(Arc::new(phone));
    }
    for (n, phone) in phones.iter().enumerate() {
        h.clock.advance(1);
        phone
            .update(
                TABLE,
                "n1",
                fields(&[("title", Value::str(format!("title {n:02}")))]),
            )
            .await
            .expect("offline edit");
    }
    let pushes: Vec<_> = phones
        .iter()
        .map(|phone| {
            let phone = Arc::clone(phone);
            tokio::spawn(async move { phone.push().await.expect("push") })
        })
        .collect();
    for push in pushes {
        push.await.expect("task");
    }
    for phone in &phones {
        phone.pull_all().await.expect("pull");
    }
    phones
}

fn assert_all_show(h: &Harness, phones: &[Arc<Phone>], expected: &Value) {
    assert_eq!(&h.server_value("title"), expected, "server");
    for phone in phones {
        assert_eq!(
            &shown(phone, "title"),
            expected,
            "{}",
            phone.config().device
        );
        assert!(!phone.is_pending(TABLE, "n1"), "{}", phone.config().device);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_phones_editing_one_field_converge_under_last_writer_wins() {
    let h = Harness::start().await;
    let phones = fifty_phones(&h).await;
    // The latest stamp is phone 49's.
    assert_all_show(&h, &phones, &Value::str("title 49"));
    let log = h.db.conflict_log(&ConflictFilter {
        field: Some("title".into()),
        limit: 1_000,
        ..ConflictFilter::default()
    });
    // Every push after the first made the field hold concurrent values.
    assert_eq!(log.conflicts.len(), 49, "one per concurrent push");
    let last = log.conflicts.last().expect("recorded");
    assert_eq!(last.candidates.len(), 50, "every value is a candidate");
    assert_eq!(last.chosen, Value::str("title 49"));
    for conflict in &log.conflicts {
        assert_eq!(conflict.policy, "last_writer_wins");
        assert!(!conflict.open);
        let latest = conflict
            .candidates
            .iter()
            .max_by_key(|candidate| candidate.stamp)
            .expect("candidates");
        assert_eq!(conflict.chosen, latest.value, "conflict {}", conflict.id);
    }
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_phones_editing_one_field_under_manual_converge_on_the_resolution() {
    let h = Harness::start().await;
    h.set_policies(json!({"fields": {"title": {"kind": "manual"}}}))
        .await;
    let phones = fifty_phones(&h).await;
    assert_all_show(&h, &phones, &Value::str("title 49"));
    let open = h.conflicts("?open=true").await;
    let listed = open["conflicts"].as_array().expect("conflicts");
    assert_eq!(
        listed.len(),
        1,
        "the newest open conflict supersedes the older ones"
    );
    assert_eq!(listed[0]["candidates"].as_array().map(Vec::len), Some(50));
    let superseded = h.db.conflict_log(&ConflictFilter {
        limit: 1_000,
        ..ConflictFilter::default()
    });
    assert_eq!(superseded.conflicts.len(), 49);
    for older in &superseded.conflicts[..48] {
        let resolution = older.resolution.as_ref().expect("closed");
        assert!(!older.open);
        assert!(resolution.superseded_by.is_some() && resolution.seq.is_none());
    }
    let id = listed[0]["id"].as_u64().expect("id");
    let (status, closed) = h
        .request(
            reqwest::Method::POST,
            &format!("/v1/conflicts/{id}/resolve"),
            Some(json!({"value": "agreed title"})),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    for phone in &phones {
        phone.pull_all().await.expect("pull");
    }
    assert_all_show(&h, &phones, &Value::str("agreed title"));
    assert_eq!(h.conflicts("?open=true").await["conflicts"], json!([]));
    h.server.shutdown().await;
}

/// `count` conflicts on `n1`'s `body`, made by server-side writes at an older
/// version; returns nothing, the log holds them.
fn server_side_conflicts(db: &Database, clock: &ManualClock, field: &str, count: usize) {
    for n in 0..count {
        let base = db.heads(TABLE, "n1").expect("heads").expect("live");
        clock.advance(1);
        db.patch(
            TABLE,
            "n1",
            vec![Edit::set(field, Value::str(format!("first {n}")))],
            &ClientId::from("writer-1"),
        )
        .expect("patch");
        clock.advance(1);
        db.patch_at(
            TABLE,
            "n1",
            vec![Edit::set(field, Value::str(format!("second {n}")))],
            &base,
            &ClientId::from("writer-2"),
        )
        .expect("concurrent patch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conflict_log_pages_without_gaps_or_duplicates() {
    let h = Harness::start().await;
    server_side_conflicts(&h.db, &h.clock, "body", 23);
    let mut seen = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let page = h
            .conflicts(&format!("?table={TABLE}&limit=5&after={after}"))
            .await;
        pages += 1;
        for conflict in page["conflicts"].as_array().expect("conflicts") {
            seen.push(conflict["id"].as_u64().expect("id"));
        }
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=23).collect::<Vec<u64>>());
    assert!(pages >= 5, "{pages} pages");
    // Filters: another field has none; limits are bounded.
    let none = h.conflicts("?field=title").await;
    assert_eq!(none, json!({"conflicts": [], "next": null}));
    for query in ["?limit=0", "?limit=1001", "?colour=red", "?open=perhaps"] {
        let (status, problem) = h
            .request(reqwest::Method::GET, &format!("/v1/conflicts{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {problem}");
    }
    let (status, problem) = h
        .request(reqwest::Method::GET, "/v1/conflicts?table=nope", None)
        .await;
    assert_eq!((status, &problem["code"]), (404, &json!("unknown_table")));
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_closed_conflicts_and_keeps_open_ones() {
    let engine = EngineConfig {
        conflicts: KeepPolicy {
            max_entries: 3,
            max_age_ms: 60_000,
        },
        ..EngineConfig::default()
    };
    let h = Harness::start_with(engine).await;
    h.set_policies(json!({"fields": {"title": {"kind": "manual"}}}))
        .await;
    server_side_conflicts(&h.db, &h.clock, "title", 1);
    server_side_conflicts(&h.db, &h.clock, "body", 6);
    assert_eq!(h.db.conflict_counts(), (1, 2), "(open, closed)");
    let ids: Vec<u64> =
        h.db.conflict_log(&ConflictFilter {
            limit: 100,
            ..ConflictFilter::default()
        })
        .conflicts
        .iter()
        .map(|conflict| conflict.id)
        .collect();
    assert_eq!(ids, [1, 6, 7]);
    // Age: an hour later every closed conflict is gone at the next write;
    // the open one stays.
    h.clock.advance(3_600_000);
    server_side_conflicts(&h.db, &h.clock, "body", 1);
    let left = h.db.conflict_log(&ConflictFilter {
        limit: 100,
        ..ConflictFilter::default()
    });
    let ids: Vec<u64> = left.conflicts.iter().map(|conflict| conflict.id).collect();
    assert_eq!(ids, [1, 8]);
    assert!(left.conflicts[0].open);
    let (status, _) = h
        .request(reqwest::Method::GET, "/v1/conflicts/2", None)
        .await;
    assert_eq!(status, 404, "trimmed");
    h.server.shutdown().await;
}

fn open_store(dir: &Path) -> mobilesyncdb::storage::Opened {
    let options = StoreOptions::new(StorageConfig {
        data_dir: Some(dir.to_owned()),
        fsync: FsyncPolicy::Always,
        ..StorageConfig::default()
    });
    Store::open(options, EngineConfig::default(), SyncConfig::default()).expect("opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_and_open_manual_conflicts_survive_a_restart() {
    let dir = TempDir::new("restart");
    let admin = ClientId::from("admin");
    let (before, open_id) = {
        let opened = open_store(dir.path());
        let db = opened.sync.database().clone();
        db.create_table(notes()).expect("table");
        db.insert(
            TABLE,
            fields(&[
                ("id", Value::str("n1")),
                ("title", Value::str("t")),
                ("score", Value::Int(1)),
            ]),
            &admin,
        )
        .expect("insert");
        let change = PolicyChange {
            fields: [(
                "title".to_owned(),
                Some(mobilesyncdb::crdt::PolicySpec::Manual),
            )]
            .into(),
            ..PolicyChange::default()
        };
        db.set_policies(TABLE, change, &admin).expect("policies");
        let phone = |device: &str| {
            let config = ClientConfig::new(device, vec![mobilesyncdb::sync::WireScope::all(TABLE)]);
            Client::new(config, InProcess::new(opened.sync.clone())).expect("client")
        };
        let (a, b) = (phone("phone-a"), phone("phone-b"));
        a.pull_all().await.expect("pull");
        b.pull_all().await.expect("pull");
        for (phone, title, score) in [(&a, "A", 10), (&b, "B", 20)] {
            phone
                .update(
                    TABLE,
                    "n1",
                    fields(&[("title", Value::str(title)), ("score", Value::Int(score))]),
                )
                .await
                .expect("edit");
        }
        a.sync().await.expect("sync");
        b.sync().await.expect("sync");
        let all = db.conflict_log(&ConflictFilter {
            limit: 100,
            ..ConflictFilter::default()
        });
        assert_eq!(all.conflicts.len(), 2, "title and score");
        let open = db.conflict_log(&ConflictFilter {
            open_only: true,
            limit: 100,
            ..ConflictFilter::default()
        });
        assert_eq!(open.conflicts.len(), 1);
        let open_id = open.conflicts[0].id;
        opened.store.close().expect("close");
        (all.conflicts, open_id)
    };

    let opened = open_store(dir.path());
    let db = opened.sync.database().clone();
    let after = db.conflict_log(&ConflictFilter {
        limit: 100,
        ..ConflictFilter::default()
    });
    assert_eq!(after.conflicts, before, "the log survives as it was");
    assert_eq!(db.open_conflicts(TABLE).expect("table"), ["n1"]);
    let policies = db.schema(TABLE).expect("table").field_policies;
    assert_eq!(
        policies.get("title"),
        Some(&mobilesyncdb::crdt::PolicySpec::Manual)
    );
    let closed = db
        .resolve_conflict(open_id, Value::str("agreed"), &admin, &FullAccess)
        .expect("resolve after restart");
    assert!(closed.resolution.is_some());
    let row = db.get(TABLE, "n1").expect("read").expect("live");
    assert_eq!(
        row.get(db.field_position(TABLE, "title").expect("field")),
        Value::str("agreed")
    );
    // New conflicts continue the ids.
    assert!(db.open_conflicts(TABLE).expect("table").is_empty());
    opened.store.close().expect("close");
    drop(opened);

    let opened = open_store(dir.path());
    let db = opened.sync.database().clone();
    let conflict = db.conflict(open_id).expect("kept");
    assert_eq!(conflict, closed, "the resolution survives too");
    assert!(db.open_conflicts(TABLE).expect("table").is_empty());
    opened.store.close().expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_re_resolves_conflicted_records_on_server_and_phones() {
    let h = Harness::start().await;
    let (a, b) = h.two_phones("phone-a", "phone-b").await;
    h.concurrent_edit(&a, &b, "score", Value::Int(9), Value::Int(4))
        .await;
    assert_everyone_shows(&h, &[&a, &b], "score", &Value::Int(4));
    let seq = h.db.latest_seq();
    let answer = h
        .set_policies(json!({"fields": {"score": {"kind": "max"}}}))
        .await;
    assert_eq!(answer["reresolved"], 1, "{answer}");
    assert_eq!(answer["version"], 2, "{answer}");
    println!("policy change: {answer:#}");
    assert_eq!(h.server_value("score"), Value::Int(9));
    assert!(
        h.db.latest_seq() > seq,
        "a change tells phones to fetch the row"
    );
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&a, &b], "score", &Value::Int(9));
    // Back to the table's policy: last-writer-wins shows B's 4 again.
    let answer = h.set_policies(json!({"fields": {"score": null}})).await;
    assert_eq!(answer["field_policies"], json!({}));
    assert_eq!(answer["reresolved"], 1);
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&a, &b], "score", &Value::Int(4));
    // A change that shows nothing differently writes nothing.
    let seq = h.db.latest_seq();
    let answer = h
        .set_policies(json!({"policy": {"kind": "last_writer_wins"}}))
        .await;
    assert_eq!(answer["reresolved"], 0);
    assert_eq!(h.db.latest_seq(), seq);
    h.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policy_requests_are_refused_and_change_nothing() {
    let h = Harness::start().await;
    let path = format!("/v1/tables/{TABLE}/policies");
    let before = h.get(&path).await;
    assert_eq!(
        before,
        json!({"table": TABLE, "version": 1, "policy": {"kind": "last_writer_wins"}, "field_policies": {}})
    );
    let seq = h.db.latest_seq();
    for (body, status, code) in [
        (json!({"policy": {"kind": "newest"}}), 400, "bad_policy"),
        (
            json!({"policy": {"kind": "client_priority"}}),
            400,
            "bad_policy",
        ),
        (
            json!({"fields": {"title": {"kind": "maximum"}}}),
            400,
            "bad_policy",
        ),
        (
            json!({"fields": {"colour": {"kind": "max"}}}),
            400,
            "bad_policy",
        ),
        (
            json!({"policy": {"kind": "max"}, "fields": {"colour": {"kind": "max"}}}),
            400,
            "bad_policy",
        ),
        (
            json!({"policy": {"kind": "custom", "name": "nope"}}),
            400,
            "bad_policy",
        ),
        (json!({"polisy": {"kind": "max"}}), 400, "bad_json"),
    ] {
        let (got, problem) = h
            .request(reqwest::Method::PUT, &path, Some(body.clone()))
            .await;
        assert_eq!(
            (got, &problem["code"]),
            (status, &json!(code)),
            "{body}: {problem}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
        println!("{body} -> {status} {}", problem["detail"]);
    }
    let (status, problem) = h
        .request(
            reqwest::Method::PUT,
            "/v1/tables/nope/policies",
            Some(json!({"policy": {"kind": "max"}})),
        )
        .await;
    assert_eq!((status, &problem["code"]), (404, &json!("unknown_table")));
    let (status, _) = h
        .request(reqwest::Method::GET, "/v1/tables/nope/policies", None)
        .await;
    assert_eq!(status, 404);
    // Client tokens may not touch policies or conflicts.
    let token = common::mint_token(&h.server, "alice", "phone-a");
    for (method, route) in [
        (reqwest::Method::GET, "/v1/policies"),
        (reqwest::Method::GET, "/v1/conflicts"),
        (reqwest::Method::GET, path.as_str()),
        (reqwest::Method::PUT, path.as_str()),
    ] {
        let body = (method == reqwest::Method::PUT).then(|| json!({"policy": {"kind": "max"}}));
        let (status, problem) = h.request_as(&token, method, route, body).await;
        assert_eq!(
            (status, &problem["code"]),
            (403, &json!("admin_only")),
            "{route}"
        );
    }
    assert_eq!(h.get(&path).await, before, "nothing changed");
    assert_eq!(h.db.latest_seq(), seq);
    h.server.shutdown().await;
}

/// A policy change that makes an already conflicted field manual opens its
/// conflict in the log (so it can be resolved over REST); one away from
/// manual closes the open conflict with the value the field now shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_open_and_close_manual_conflicts_in_the_log() {
    let h = Harness::start().await;
    let (a, b) = h.two_phones("phone-a", "phone-b").await;
    h.concurrent_edit(&a, &b, "title", Value::str("A"), Value::str("B"))
        .await;
    let answer = h
        .set_policies(json!({"fields": {"title": {"kind": "manual"}}}))
        .await;
    assert_eq!(answer["reresolved"], 1, "the row is open now: {answer}");
    assert_eq!(h.db.open_conflicts(TABLE).expect("table"), ["n1"]);
    let open = h.conflicts("?open=true").await;
    let listed = open["conflicts"].as_array().expect("conflicts");
    assert_eq!(listed.len(), 1, "{open:#}");
    assert_eq!(listed[0]["policy"], "manual");
    assert_eq!(listed[0]["field"], "title");
    assert_eq!(listed[0]["candidates"].as_array().map(Vec::len), Some(2));
    let id = listed[0]["id"].as_u64().expect("id");

    // Back to last-writer-wins: nothing waits for a person any more.
    let answer = h.set_policies(json!({"fields": {"title": null}})).await;
    assert_eq!(answer["reresolved"], 1, "{answer}");
    assert!(h.db.open_conflicts(TABLE).expect("table").is_empty());
    assert_eq!(h.conflicts("?open=true").await["conflicts"], json!([]));
    let closed = h.get(&format!("/v1/conflicts/{id}")).await;
    assert_eq!(closed["resolution"]["value"], "B", "{closed:#}");
    assert_eq!(closed["resolution"]["by"], "admin", "{closed:#}");
    a.sync().await.expect("sync");
    b.sync().await.expect("sync");
    assert_everyone_shows(&h, &[&a, &b], "title", &Value::str("B"));
    h.server.shutdown().await;
}

#[test]
fn table_creation_and_policy_changes_announce_the_whole_schema() {
    let db = Database::new(EngineConfig::default()).expect("db");
    db.want_events(EventKind::ALL.into_iter().collect());
    db.create_table(notes()).expect("table");
    let change = PolicyChange {
        policy: None,
        fields: [(
            "title".to_owned(),
            Some(mobilesyncdb::crdt::PolicySpec::Max),
        )]
        .into(),
    };
    db.set_policies(TABLE, change, &ClientId::from("admin"))
        .expect("policies");
    let events = db.events_after(0, 10);
    let kinds: Vec<&str> = events.iter().map(|event| event.kind.name()).collect();
    assert_eq!(kinds, ["schema.changed", "schema.changed"]);
    let (created, changed) = (&events[0].data, &events[1].data);
    assert_eq!(created["created"], true, "{created}");
    assert_eq!(created["version"], 1, "{created}");
    assert_eq!(changed["created"], false, "{changed}");
    assert_eq!(changed["version"], 2, "{changed}");
    assert_eq!(changed["schema"]["name"], TABLE, "{changed}");
    assert_eq!(
        changed["schema"]["field_policies"]["title"],
        json!({"kind": "max"}),
        "{changed}"
    );
}
