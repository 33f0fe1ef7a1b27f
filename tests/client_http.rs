//! The reference client over HTTP against a real server on an ephemeral port:
//! two devices of one user sync each other's records; a bad token is a lasting
//! 401; a sync error under an HTTP error status still reaches the client as the
//! server's error message; a rate-limited token gets a retryable 429 with its
//! `Retry-After`; an unreachable server is a retryable connection error.

use std::time::Duration;

use mobilesyncdb::api::ServerHandle;
use mobilesyncdb::client::{
    Client, ClientConfig, ClientError, HttpTransport, RetryPolicy, TransportError,
};
use mobilesyncdb::config::{AccessRule, Config};
use mobilesyncdb::crdt::Value;
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::WireScope;

mod common;

use common::{fields, local_config, mint_token as token};

async fn start(configure: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut config = local_config();
    config.access.insert("notes".into(), AccessRule::Shared);
    configure(&mut config);
    let db = Database::new(config.engine.clone()).unwrap();
    db.create_table(
        TableSchema::new("notes", "id").field(FieldSpec::new("text", FieldType::String)),
    )
    .unwrap();
    mobilesyncdb::api::start_with(config, db).await.unwrap()
}

fn client(handle: &ServerHandle, device: &str, token: &str) -> Client<HttpTransport> {
    let mut config = ClientConfig::new(device, vec![WireScope::all("notes")]);
    config.retry = RetryPolicy::never();
    let transport = HttpTransport::new(&handle.url(), token).unwrap();
    Client::new(config, transport).unwrap()
}

fn note(id: &str, text: &str) -> Fields {
    fields(&[("id", Value::str(id)), ("text", Value::str(text))])
}

fn text(client: &Client<HttpTransport>, id: &str) -> Option<Value> {
    client.get("notes", id)?.get("text").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_sync_through_the_http_server() {
    let handle = start(|_| {}).await;
    let phone = client(&handle, "phone-1", &token(&handle, "alice", "phone-1"));
    let tablet = client(&handle, "phone-2", &token(&handle, "alice", "phone-2"));

    phone
        .insert("notes", note("n1", "from phone"))
        .await
        .unwrap();
    tablet
        .insert("notes", note("n2", "from tablet"))
        .await
        .unwrap();
    let report = phone.sync().await.unwrap();
    assert_eq!(report.push.applied, 1);
    let report = tablet.sync().await.unwrap();
    assert_eq!(report.push.applied, 1);
    assert!(report.pull.records >= 1, "{report:?}");
    phone.sync().await.unwrap();

    for device in [&phone, &tablet] {
        assert_eq!(text(device, "n1"), Some(Value::str("from phone")));
        assert_eq!(text(device, "n2"), Some(Value::str("from tablet")));
        assert_eq!(device.queued_ops(), 0);
        assert!(!device.is_pending("notes", "n1"));
        assert!(!device.is_pending("notes", "n2"));
    }
    assert_eq!(phone.cursor(), tablet.cursor());

    // An update and a delete travel the same way, over the pooled connection.
    tablet
        .update("notes", "n1", note("n1", "edited on tablet"))
        .await
        .unwrap();
    phone.delete("notes", "n2").await.unwrap();
    tablet.sync().await.unwrap();
    phone.sync().await.unwrap();
    tablet.sync().await.unwrap();
    for device in [&phone, &tablet] {
        assert_eq!(text(device, "n1"), Some(Value::str("edited on tablet")));
        assert_eq!(device.get("notes", "n2"), None);
    }
    let stats = phone.stats();
    assert_eq!(stats.retries, 0);
    assert!(stats.requests >= 3 && stats.bytes_received > 0, "{stats:?}");
    // The server saw the phone's pulls and pushes over HTTP, as its device.
    let session = handle.state().sync().session("phone-1").expect("session");
    assert_eq!(session.acked_cursor, phone.cursor());
    assert!(session.pulls >= 3 && session.pushes >= 2, "{session:?}");

    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_a_lasting_401() {
    let handle = start(|_| {}).await;
    let mut config = ClientConfig::new("phone-1", vec![WireScope::all("notes")]);
    // Retries allowed: a 401 must not be retried anyway.
    config.retry = RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(1),
    };
    let transport = HttpTransport::new(&handle.url(), "not-a-token").unwrap();
    let phone = Client::new(config, transport).unwrap();
    phone.insert("notes", note("n1", "hello")).await.unwrap();

    let error = phone.sync().await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Transport(TransportError::HttpStatus {
                status: 401,
                code: Some(code),
                retry_after: None,
                ..
            }) if code == "unauthorized"
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(error.code(), Some("unauthorized"));
    assert_eq!(phone.stats().retries, 0);
    assert_eq!(phone.stats().requests, 1);
    assert_eq!(phone.queued_ops(), 1, "the write stays queued");

    // A fresh token fixes it in place.
    phone
        .transport()
        .set_token(&token(&handle, "alice", "phone-1"))
        .unwrap();
    let report = phone.sync().await.unwrap();
    assert_eq!(report.push.applied, 1);
    assert_eq!(phone.queued_ops(), 0);

    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_error_under_an_http_error_status_reaches_the_client() {
    let handle = start(|_| {}).await;
    // The token names phone-1, the client says it is phone-2.
    let impostor = client(&handle, "phone-2", &token(&handle, "alice", "phone-1"));
    let error = impostor.pull_all().await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Refused { code, .. } if code == "device_mismatch"),
        "{error:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_token_gets_a_retryable_429_with_retry_after() {
    let handle = start(|config| {
        config.limits.requests_per_second = 1;
        config.limits.burst = 1;
    })
    .await;
    let phone = client(&handle, "phone-1", &token(&handle, "alice", "phone-1"));
    let mut limited = None;
    for _ in 0..10 {
        if let Err(error) = phone.pull_once().await {
            limited = Some(error);
            break;
        }
    }
    let error = limited.expect("the limiter answers 429 within 10 quick requests");
    assert!(
        matches!(
            &error,
            ClientError::Transport(TransportError::HttpStatus {
                status: 429,
                code: Some(code),
                retry_after: Some(_),
                ..
            }) if code == "rate_limited"
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let wait = error.retry_after().unwrap();
    assert!(
        wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
        "{wait:?}"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_retryable_connection_error() {
    let handle = start(|_| {}).await;
    let url = handle.url();
    let token = token(&handle, "alice", "phone-1");
    handle.shutdown().await;

    let mut config = ClientConfig::new("phone-1", vec![WireScope::all("notes")]);
    config.retry = RetryPolicy::never();
    let transport = HttpTransport::builder(&url, &token)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let phone = Client::new(config, transport).unwrap();
    let error = phone.pull_all().await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::Transport(TransportError::Connect { .. })
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
}
