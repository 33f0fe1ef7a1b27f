//! A custom merge policy, written in Rust and selected over REST.
//!
//! An embedded user registers `longest_text` (the longest of the concurrent
//! texts wins) on its database, starts the HTTP server in this process,
//! selects the policy for the `notes.body` field with
//! `PUT /v1/tables/notes/policies`, and lets two phones (reference clients
//! over HTTP) edit the same note while offline. After both sync, every replica
//! shows the longest text, and the conflict log says what happened.
//!
//! ```sh
//! cargo run --example custom_merge_policy
//! ```

use std::error::Error;

use mobilesyncdb::client::{Client, ClientConfig, HttpTransport};
use mobilesyncdb::config::{AccessRule, Config, DEV_ADMIN_KEY};
use mobilesyncdb::crdt::{Custom, Resolution, Value};
use mobilesyncdb::engine::Database;
use mobilesyncdb::schema::{FieldSpec, FieldType, Fields, TableSchema};
use mobilesyncdb::sync::WireScope;
use serde_json::json;

/// The merge function: pure and deterministic. It sees the concurrent values
/// in canonical order and must not read the clock or randomness; ties of
/// length go to the greatest text, so every replica picks the same one.
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

fn note(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(name, text)| ((*name).to_owned(), Value::str(*text)))
        .collect()
}

fn phone(url: &str, device: &str, token: &str) -> Result<Client<HttpTransport>, Box<dyn Error>> {
    let config = ClientConfig::new(device, vec![WireScope::all("notes")]);
    Ok(Client::new(config, HttpTransport::new(url, token)?)?)
}

fn body_of(phone: &Client<HttpTransport>) -> String {
    match phone
        .get("notes", "n1")
        .and_then(|row| row.get("body").cloned())
    {
        Some(Value::Str(text)) => text.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // 1. The embedded database, with the custom policy registered by name.
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.access.insert("notes".into(), AccessRule::Shared);
    let db = Database::new(config.engine.clone())?;
    db.register_policy(std::sync::Arc::new(longest_text()))?;
    db.create_table(
        TableSchema::new("notes", "id")
            .field(FieldSpec::new("title", FieldType::String))
            .field(FieldSpec::new("body", FieldType::String)),
    )?;

    // 2. The HTTP server, in this process.
    let server = mobilesyncdb::api::start_with(config, db.clone()).await?;
    let url = server.url();
    println!("server on {url}");

    // 3. Select the policy over REST, as an operator would.
    let http = reqwest::Client::new();
    let admin = format!("Bearer {DEV_ADMIN_KEY}");
    let catalog = http
        .get(format!("{url}/v1/policies"))
        .header("authorization", &admin)
        .send()
        .await?
        .text()
        .await?;
    println!("GET /v1/policies -> {catalog}");
    let request = json!({"fields": {"body": {"kind": "custom", "name": "longest_text"}}});
    let answer = http
        .put(format!("{url}/v1/tables/notes/policies"))
        .header("authorization", &admin)
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await?;
    println!(
        "PUT /v1/tables/notes/policies {request} -> {} {}",
        answer.status(),
        answer.text().await?
    );

    // 4. Two phones of one user hold the note, then edit it while offline.
    let auth = server.state().auth();
    let mint = |device: &str| {
        auth.mint("alice", device, None)
            .map(|(token, _)| token)
            .map_err(|problem| problem.detail)
    };
    let (token_a, token_b) = (mint("phone-a")?, mint("phone-b")?);
    let a = phone(&url, "phone-a", &token_a)?;
    let b = phone(&url, "phone-b", &token_b)?;
    a.insert(
        "notes",
        note(&[("id", "n1"), ("title", "shopping"), ("body", "milk")]),
    )
    .await?;
    a.sync().await?;
    b.sync().await?;
    a.update(
        "notes",
        "n1",
        note(&[("body", "milk, eggs, flour and butter")]),
    )
    .await?;
    b.update("notes", "n1", note(&[("body", "milk and bread")]))
        .await?;
    println!("offline: phone A shows {:?}", body_of(&a));
    println!("offline: phone B shows {:?}", body_of(&b));

    // 5. Both sync: the longest text wins everywhere, whoever wrote last.
    a.sync().await?;
    b.sync().await?;
    a.sync().await?;
    let row = db.get("notes", "n1")?.ok_or("n1 is gone")?;
    let position = db.field_position("notes", "body").ok_or("no body field")?;
    println!("after sync: server shows {:?}", row.get(position));
    println!("after sync: phone A shows {:?}", body_of(&a));
    println!("after sync: phone B shows {:?}", body_of(&b));

    let conflicts = http
        .get(format!("{url}/v1/conflicts?table=notes&field=body"))
        .header("authorization", &admin)
        .send()
        .await?
        .text()
        .await?;
    let conflicts: serde_json::Value = serde_json::from_str(&conflicts)?;
    println!(
        "GET /v1/conflicts?table=notes&field=body ->\n{}",
        serde_json::to_string_pretty(&conflicts)?
    );
    server.shutdown().await;
    Ok(())
}
