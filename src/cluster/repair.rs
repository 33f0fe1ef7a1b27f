//! Anti-entropy: a node compares its records' heads with a peer's and, for
//! each record that differs, runs one round of the automerge sync protocol
//! with the peer over HTTP. The changes the peer has and this node lacks go
//! back on the stream, so every node that lacks them gets them (the others
//! find them duplicates).
//!
//! The stream keeps nodes identical; this repairs what it cannot: writes the
//! stream lost (a NATS server that crashed before its disk had them) or
//! removed by its age limit before a stopped node read them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{Message, State, SyncDoc};
use automerge::{Automerge, ChangeHash};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::node::Shared;
use crate::engine::{Database, ExportCursor, SequencedWrite};

/// Records per page of heads.
const PAGE: usize = 500;

/// One record's heads, as hex change hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeads {
    pub id: String,
    pub heads: Vec<String>,
}

/// A page of a table's records with their heads, in slot order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadsPage {
    pub records: Vec<RecordHeads>,
    /// Where the next page starts; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u32>,
}

/// What a repair pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Peers compared with.
    pub peers: usize,
    /// Records compared.
    pub compared: usize,
    /// Records whose heads differed.
    pub differed: usize,
    /// Records this node lacked changes of, and those changes: put back on
    /// the stream.
    pub repaired: usize,
    pub changes: usize,
}

/// A page of `table`'s records with their heads, from slot `from`.
///
/// # Errors
///
/// A description of the engine's refusal (an unknown table).
pub fn heads_page(db: &Database, table: &str, from: u32) -> Result<HeadsPage, String> {
    let page = db
        .export_page(table, ExportCursor(from), PAGE, usize::MAX)
        .map_err(|error| error.to_string())?;
    let records = page
        .records
        .into_iter()
        .filter_map(|record| {
            let doc = Automerge::load(&record.doc).ok()?;
            Some(RecordHeads {
                id: record.id,
                heads: hex_heads(&doc.get_heads()),
            })
        })
        .collect();
    Ok(HeadsPage {
        records,
        next: page.next.map(|cursor| cursor.0),
    })
}

/// The peer's side of one sync round: reads this node's sync message for a
/// record and answers with the changes it lacks (or `None` when it lacks
/// nothing this node has).
///
/// # Errors
///
/// A description of a message that is not a sync message, or an unknown table.
pub fn answer_sync(
    db: &Database,
    table: &str,
    id: &str,
    message: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let message =
        Message::decode(message).map_err(|error| format!("not a sync message: {error}"))?;
    let mut doc = load(db, table, id)?;
    let mut state = State::new();
    doc.receive_sync_message(&mut state, message)
        .map_err(|error| format!("the sync message does not apply: {error}"))?;
    Ok(doc.generate_sync_message(&mut state).map(Message::encode))
}

fn load(db: &Database, table: &str, id: &str) -> Result<Automerge, String> {
    match db
        .record_bytes(table, id)
        .map_err(|error| error.to_string())?
    {
        Some(bytes) => {
            Automerge::load(&bytes).map_err(|error| format!("record `{id}` does not load: {error}"))
        }
        None => Ok(Automerge::new()),
    }
}

fn hex_heads(heads: &[ChangeHash]) -> Vec<String> {
    let mut heads: Vec<String> = heads.iter().map(ToString::to_string).collect();
    heads.sort_unstable();
    heads
}

/// Compares with a peer every `anti_entropy_secs` (when set).
pub(super) async fn anti_entropy(shared: Arc<Shared>) {
    let every = shared.config.anti_entropy_secs;
    if every == 0 {
        return;
    }
    let mut ticks = tokio::time::interval(Duration::from_secs(every));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match repair_with_peers(&shared).await {
            Ok(report) if report.repaired > 0 => {
                info!(node = %shared.node, ?report, "anti-entropy repaired records");
            }
            Ok(report) => {
                debug!(node = %shared.node, ?report, "anti-entropy found nothing to repair")
            }
            Err(reason) => {
                warn!(node = %shared.node, %reason, "anti-entropy could not compare");
                shared.note_error(reason);
            }
        }
    }
}

/// One pass against every live peer.
pub(super) async fn repair_with_peers(shared: &Arc<Shared>) -> Result<RepairReport, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))?;
    let mut report = RepairReport::default();
    for (node, address) in shared.live_peers() {
        report.peers += 1;
        repair_with(shared, &client, &address, &mut report)
            .await
            .map_err(|reason| format!("comparing with {node} at {address}: {reason}"))?;
    }
    Ok(report)
}

async fn repair_with(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    address: &str,
    report: &mut RepairReport,
) -> Result<(), String> {
    let key = shared.peer_key.as_deref().unwrap_or_default();
    let tables: Vec<String> = shared
        .db
        .schemas()
        .into_iter()
        .map(|schema| schema.name)
        .collect();
    for table in tables {
        let mut from = Some(0);
        while let Some(start) = from {
            let url = format!("http://{address}/v1/cluster/heads?table={table}&from={start}");
            let response = client
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .map_err(|error| error.to_string())?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                // The peer lacks the table.
                break;
            }
            if !response.status().is_success() {
                return Err(format!("{url}: {}", response.status()));
            }
            let body = response.bytes().await.map_err(|error| error.to_string())?;
            let page: HeadsPage =
                serde_json::from_slice(&body).map_err(|error| format!("{url}: {error}"))?;
            from = page.next;
            for record in page.records {
                report.compared += 1;
                let db = shared.db.clone();
                let (table_name, id) = (table.clone(), record.id.clone());
                let own = tokio::task::spawn_blocking(move || db.heads(&table_name, &id))
                    .await
                    .map_err(|error| error.to_string())?
                    .map_err(|error| error.to_string())?
                    .map(|heads| hex_heads(&heads))
                    .unwrap_or_default();
                if own == record.heads {
                    continue;
                }
                report.differed += 1;
                let own: HashSet<&String> = own.iter().collect();
                if record.heads.iter().all(|head| own.contains(head)) {
                    // This node is ahead; the peer's own pass takes what it lacks.
                    continue;
                }
                let changes = sync_record(shared, client, address, key, &table, &record.id).await?;
                if changes > 0 {
                    report.repaired += 1;
                    report.changes += changes;
                }
            }
        }
    }
    Ok(())
}

/// One sync round for a record; the changes it brought, put on the stream.
async fn sync_record(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    address: &str,
    key: &str,
    table: &str,
    id: &str,
) -> Result<usize, String> {
    let db = shared.db.clone();
    let (table_name, record_id) = (table.to_owned(), id.to_owned());
    let (doc, mut state, opening) = tokio::task::spawn_blocking(move || {
        let doc = load(&db, &table_name, &record_id)?;
        let mut state = State::new();
        let opening = doc.generate_sync_message(&mut state).map(Message::encode);
        Ok::<_, String>((doc, state, opening))
    })
    .await
    .map_err(|error| error.to_string())??;
    let Some(opening) = opening else {
        return Ok(0);
    };
    let url = format!("http://{address}/v1/cluster/sync?table={table}&id={id}");
    let response = client
        .post(&url)
        .bearer_auth(key)
        .body(opening)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(0);
    }
    if !response.status().is_success() {
        return Err(format!("{url}: {}", response.status()));
    }
    let reply = response.bytes().await.map_err(|error| error.to_string())?;
    let db = shared.db.clone();
    let (table, id) = (table.to_owned(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut doc = doc;
        let before = doc.get_heads();
        let message = Message::decode(&reply).map_err(|error| format!("the peer's sync message: {error}"))?;
        doc.receive_sync_message(&mut state, message)
            .map_err(|error| format!("the peer's changes do not apply: {error}"))?;
        let changes: Vec<Vec<u8>> = doc
            .get_changes(&before)
            .into_iter()
            .map(|change| change.raw_bytes().to_vec())
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        let count = changes.len();
        warn!(table = %table, record = %id, changes = count, "anti-entropy: this node lacked changes; putting them back on the stream");
        db.republish(SequencedWrite {
            table,
            id,
            origin: mobilesyncdb_crdt::ClientId::from(super::message::REPAIR_ORIGIN),
            changes,
            shown: None,
        })
        .map_err(|error| error.to_string())?;
        Ok(count)
    })
    .await
    .map_err(|error| error.to_string())?
}
