//! Delivery: one worker per endpoint sends the events it wants, in order, one
//! at a time, each until the endpoint acknowledges it.
//!
//! The events themselves are the engine's event log (durable with the data
//! and logged with the write that made them); an endpoint's progress is its
//! cursor, the id of the last event it acknowledged, kept as a setting. A
//! restart therefore resumes every endpoint where it was, and at worst
//! delivers the last event again with the same id (at least once).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::config::WebhookConfig;
use crate::engine::{Database, EngineError, Event, EventKind, EventKinds};
use crate::webhook::endpoint::{CURSOR_PREFIX, ENDPOINT_PREFIX, Endpoint, KeyedSecret};
use crate::webhook::guard::{self, TargetError, TargetPolicy};
use crate::webhook::sign::{self, Secret, SignError};

/// Events a worker reads from the log at once.
const READ_BATCH: usize = 256;
/// The most of a response body read (and dropped) to keep its connection.
const DRAIN_BODY_BYTES: usize = 64 << 10;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook endpoint `{id}` does not exist")]
    UnknownEndpoint { id: String },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Invalid(String),
    #[error("at most {limit} webhook endpoints may be registered")]
    TooMany { limit: usize },
    #[error(
        "event {from} is no longer retained: the oldest retained event is {oldest} (see `engine.events` retention)"
    )]
    NotRetained { from: u64, oldest: u64 },
    #[error(transparent)]
    Secret(#[from] SignError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl WebhookError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::UnknownEndpoint { .. } => "unknown_webhook",
            WebhookError::Target(_) => "webhook_target_refused",
            WebhookError::Invalid(_) => "invalid_webhook",
            WebhookError::TooMany { .. } => "too_many_webhooks",
            WebhookError::NotRetained { .. } => "event_not_retained",
            WebhookError::Secret(_) => "invalid_secret",
            WebhookError::Engine(error) => error.code(),
        }
    }
}

/// A new endpoint, as the API takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    /// Event kinds by name (`record.created`, …), or `"*"` for every kind.
    pub events: Vec<String>,
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// A secret to sign with (`whsec_…`); one is generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

impl NewEndpoint {
    /// Checks what needs no network: the URL's form (and an IP-literal host),
    /// the event kinds and the secret. The API calls it before resolving the
    /// host, so that a bad request is told what is wrong with it first.
    ///
    /// # Errors
    ///
    /// As [`Webhooks::register`], except too many endpoints and storage.
    pub fn check(&self, policy: &TargetPolicy) -> Result<(), WebhookError> {
        guard::check_url(&self.url, policy)?;
        parse_kinds(&self.events)?;
        if let Some(text) = &self.secret {
            Secret::parse(text)?;
        }
        Ok(())
    }
}

impl EndpointUpdate {
    /// Checks what needs no network (see [`NewEndpoint::check`]).
    ///
    /// # Errors
    ///
    /// A refused URL or unknown event kinds.
    pub fn check(&self, policy: &TargetPolicy) -> Result<(), WebhookError> {
        if let Some(url) = &self.url {
            guard::check_url(url, policy)?;
        }
        if let Some(events) = &self.events {
            parse_kinds(events)?;
        }
        Ok(())
    }
}

/// A change to an endpoint; absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub tables: Option<Vec<String>>,
    pub description: Option<String>,
    /// `true` enables a disabled endpoint again (it resumes where it stopped).
    pub enabled: Option<bool>,
}

/// An endpoint as the API shows it: no secrets, with its delivery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub events: Vec<EventKind>,
    pub tables: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_ms: u64,
    /// The id of the last event it acknowledged (or that was not for it).
    pub delivered_through: u64,
    /// The newest event id.
    pub latest_event: u64,
    /// Since when every attempt has failed, if they do.
    pub failing_since_ms: Option<u64>,
    /// When the next attempt is due, while retrying.
    pub next_attempt_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// What happened to one delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// It failed; another attempt follows.
    Retrying,
    /// The endpoint answered 410 Gone, or failed for too long: it is disabled.
    Disabled,
    /// Events the retention dropped before this endpoint got them.
    Missed,
}

/// One entry of an endpoint's delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The event (for `missed`: the last one missed).
    pub event: u64,
    pub kind: Option<EventKind>,
    pub attempt: u32,
    pub time_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: Outcome,
}

/// Outgoing webhooks: the registered endpoints and their workers.
#[derive(Clone, Debug)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    config: WebhookConfig,
    policy: TargetPolicy,
    client: reqwest::Client,
    endpoints: Mutex<BTreeMap<String, Slot>>,
    shutdown: watch::Sender<bool>,
    /// On a cluster node, its name: event ids are per node, so the
    /// `webhook-id` names the node too.
    namespace: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Webhooks")
            .field("policy", &self.policy.to_string())
            .finish_non_exhaustive()
    }
}

/// An endpoint and what its worker shares with the API.
struct Slot {
    endpoint: Endpoint,
    cursor: u64,
    /// Moves when the endpoint or its cursor changes under the worker, which
    /// then starts over from the cursor.
    generation: u64,
    /// Moves only when the cursor is set from outside (a replay): an attempt
    /// acknowledged while the endpoint was edited still moves the cursor, so
    /// that an edit (a rotation, a new description) sends nothing twice.
    rewinds: u64,
    wake: Arc<Notify>,
    log: VecDeque<Delivery>,
    failing_since_ms: Option<u64>,
    next_attempt_ms: Option<u64>,
    last_error: Option<String>,
}

impl Webhooks {
    /// Loads the registered endpoints and starts their workers. Call inside
    /// a tokio runtime.
    ///
    /// # Errors
    ///
    /// An HTTP client that cannot be built.
    pub fn start(db: Database, config: WebhookConfig) -> Result<Webhooks, WebhookError> {
        let policy = TargetPolicy::allowing(config.allow_networks.iter().copied());
        let client = guard::client(&policy, Duration::from_millis(config.timeout_ms))?;
        let inner = Arc::new(Inner {
            db,
            config,
            policy,
            client,
            endpoints: Mutex::new(BTreeMap::new()),
            shutdown: watch::Sender::new(false),
            namespace: std::sync::OnceLock::new(),
        });
        let webhooks = Webhooks { inner };
        let cursors: BTreeMap<String, u64> = webhooks
            .inner
            .db
            .settings(CURSOR_PREFIX)
            .into_iter()
            .filter_map(|(key, value)| {
                Some((
                    key.strip_prefix(CURSOR_PREFIX)?.to_owned(),
                    value.parse().ok()?,
                ))
            })
            .collect();
        for (key, value) in webhooks.inner.db.settings(ENDPOINT_PREFIX) {
            match serde_json::from_str::<Endpoint>(&value) {
                Ok(endpoint) => {
                    let cursor = cursors.get(&endpoint.id).copied().unwrap_or(0);
                    webhooks.add(endpoint, cursor);
                }
                Err(error) => {
                    warn!(key, %error, "a stored webhook endpoint cannot be read; skipped")
                }
            }
        }
        webhooks.update_interest();
        Ok(webhooks)
    }

    /// The address policy deliveries and registrations are held to.
    pub fn policy(&self) -> &TargetPolicy {
        &self.inner.policy
    }

    /// Registers an endpoint. Its first event is the next one made.
    ///
    /// The URL is checked here (scheme, and an IP-literal host against the
    /// address policy); call [`guard::check_resolved`] first to also refuse
    /// a host name that resolves only to internal addresses. Every delivery
    /// is checked again at connect time.
    ///
    /// # Errors
    ///
    /// [`WebhookError`] for a refused URL, unknown event kinds, a bad secret,
    /// too many endpoints, or storage refusing the write.
    pub fn register(&self, request: NewEndpoint) -> Result<Endpoint, WebhookError> {
        guard::check_url(&request.url, &self.inner.policy)?;
        let events = parse_kinds(&request.events)?;
        let secret = match &request.secret {
            Some(text) => Secret::parse(text)?,
            None => Secret::generate()?,
        };
        if self.lock().len() >= self.inner.config.max_endpoints {
            return Err(WebhookError::TooMany {
                limit: self.inner.config.max_endpoints,
            });
        }
        let endpoint = Endpoint {
            id: Endpoint::new_id(),
            url: request.url,
            events,
            tables: request.tables,
            description: request.description,
            secrets: vec![KeyedSecret {
                secret,
                expires_ms: None,
            }],
            enabled: true,
            disabled_reason: None,
            created_ms: now_ms(),
        };
        // Interest first, so that no event is missed between the cursor
        // chosen below and the first event this endpoint wants.
        let kinds = self.interest().with_all(endpoint.kinds());
        self.inner.db.want_events(kinds);
        let cursor = self.inner.db.event_range().1;
        let saved = self
            .save(&endpoint)
            .and_then(|()| self.save_cursor(&endpoint.id, cursor));
        if let Err(error) = saved {
            self.update_interest();
            return Err(error);
        }
        info!(id = %endpoint.id, url = %endpoint.url, events = ?endpoint.events, "webhook endpoint registered");
        self.add(endpoint.clone(), cursor);
        Ok(endpoint)
    }

    /// Changes an endpoint.
    ///
    /// # Errors
    ///
    /// As [`Webhooks::register`], and an unknown endpoint.
    pub fn update(&self, id: &str, update: EndpointUpdate) -> Result<EndpointView, WebhookError> {
        let mut endpoint = self.endpoint(id)?;
        if let Some(url) = update.url {
            guard::check_url(&url, &self.inner.policy)?;
            endpoint.url = url;
        }
        if let Some(events) = update.events {
            endpoint.events = parse_kinds(&events)?;
        }
        if let Some(tables) = update.tables {
            endpoint.tables = tables;
        }
        if let Some(description) = update.description {
            endpoint.description = description;
        }
        if let Some(enabled) = update.enabled {
            endpoint.enabled = enabled;
            endpoint.disabled_reason = (!enabled).then(|| "disabled through the API".to_owned());
        }
        self.save(&endpoint)?;
        self.replace(endpoint, None);
        self.update_interest();
        self.view(id)
    }

    /// Removes an endpoint; its worker stops.
    ///
    /// # Errors
    ///
    /// An unknown endpoint, or storage refusing the write.
    pub fn delete(&self, id: &str) -> Result<(), WebhookError> {
        self.endpoint(id)?;
        self.inner
            .db
            .put_setting(&format!("{ENDPOINT_PREFIX}{id}"), None)?;
        self.inner
            .db
            .put_setting(&format!("{CURSOR_PREFIX}{id}"), None)?;
        if let Some(slot) = self.lock().remove(id) {
            slot.wake.notify_one();
        }
        self.update_interest();
        info!(id, "webhook endpoint deleted");
        Ok(())
    }

    /// Gives an endpoint a new secret. The previous one keeps signing (both
    /// signatures are sent) for `rotation_grace_ms`, so a receiver can switch
    /// without refusing a delivery. Returns the new secret.
    ///
    /// # Errors
    ///
    /// An unknown endpoint, or storage refusing the write.
    pub fn rotate(&self, id: &str) -> Result<(Secret, u64), WebhookError> {
        let mut endpoint = self.endpoint(id)?;
        let now = now_ms();
        let expires = now + self.inner.config.rotation_grace_ms;
        endpoint
            .secrets
            .retain(|keyed| keyed.expires_ms.is_none_or(|at| at > now));
        for keyed in &mut endpoint.secrets {
            keyed.expires_ms = Some(keyed.expires_ms.map_or(expires, |at| at.min(expires)));
        }
        let secret = Secret::generate()?;
        endpoint.secrets.insert(
            0,
            KeyedSecret {
                secret: secret.clone(),
                expires_ms: None,
            },
        );
        self.save(&endpoint)?;
        self.replace(endpoint, None);
        info!(id, previous_until_ms = expires, "webhook secret rotated");
        Ok((secret, expires))
    }

    /// Sends an endpoint every event from `from` on again (with their
    /// original ids), and enables it if it was disabled.
    ///
    /// # Errors
    ///
    /// An unknown endpoint, or `from` older than the retained events.
    pub fn replay(&self, id: &str, from: u64) -> Result<EndpointView, WebhookError> {
        let mut endpoint = self.endpoint(id)?;
        let (oldest, _) = self.inner.db.event_range();
        if from < oldest {
            return Err(WebhookError::NotRetained { from, oldest });
        }
        let cursor = from.saturating_sub(1);
        if !endpoint.enabled {
            endpoint.enabled = true;
            endpoint.disabled_reason = None;
            self.save(&endpoint)?;
        }
        info!(id, from, "webhook replay");
        // Moved in memory first: a worker saving its position from now on
        // saves this one, so the durable save below is never overwritten by
        // an older position.
        self.replace(endpoint, Some(cursor));
        self.save_cursor(id, cursor)?;
        self.view(id)
    }

    /// Every endpoint, by id.
    pub fn list(&self) -> Vec<EndpointView> {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.iter().filter_map(|id| self.view(id).ok()).collect()
    }

    /// One endpoint.
    ///
    /// # Errors
    ///
    /// An unknown endpoint.
    pub fn view(&self, id: &str) -> Result<EndpointView, WebhookError> {
        let latest = self.inner.db.event_range().1;
        let endpoints = self.lock();
        let slot = endpoints.get(id).ok_or_else(|| unknown(id))?;
        let endpoint = &slot.endpoint;
        Ok(EndpointView {
            id: endpoint.id.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            tables: endpoint.tables.clone(),
            description: endpoint.description.clone(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.clone(),
            created_ms: endpoint.created_ms,
            delivered_through: slot.cursor,
            latest_event: latest,
            failing_since_ms: slot.failing_since_ms,
            next_attempt_ms: slot.next_attempt_ms,
            last_error: slot.last_error.clone(),
        })
    }

    /// The newest `limit` entries of an endpoint's delivery log, newest first.
    ///
    /// # Errors
    ///
    /// An unknown endpoint.
    pub fn deliveries(&self, id: &str, limit: usize) -> Result<Vec<Delivery>, WebhookError> {
        let endpoints = self.lock();
        let slot = endpoints.get(id).ok_or_else(|| unknown(id))?;
        Ok(slot.log.iter().rev().take(limit).cloned().collect())
    }

    /// Names the cluster node these webhooks deliver for: its `webhook-id`s
    /// become `evt_<node>_<id>`, unique in the cluster. Set once.
    pub fn set_namespace(&self, node: &str) {
        let _ = self.inner.namespace.set(node.to_owned());
    }

    /// Stops every worker (an attempt in flight finishes first).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.inner.lock()
    }

    fn endpoint(&self, id: &str) -> Result<Endpoint, WebhookError> {
        self.lock()
            .get(id)
            .map(|slot| slot.endpoint.clone())
            .ok_or_else(|| unknown(id))
    }

    fn save(&self, endpoint: &Endpoint) -> Result<(), WebhookError> {
        let json = serde_json::to_string(endpoint).expect("endpoints serialize");
        self.inner
            .db
            .put_setting(&format!("{ENDPOINT_PREFIX}{}", endpoint.id), Some(json))?;
        Ok(())
    }

    /// Saves an endpoint's position, durably.
    fn save_cursor(&self, id: &str, cursor: u64) -> Result<(), WebhookError> {
        self.inner
            .db
            .put_setting(&format!("{CURSOR_PREFIX}{id}"), Some(cursor.to_string()))?;
        Ok(())
    }

    fn add(&self, endpoint: Endpoint, cursor: u64) {
        let id = endpoint.id.clone();
        let wake = Arc::new(Notify::new());
        self.lock().insert(
            id.clone(),
            Slot {
                endpoint,
                cursor,
                generation: 0,
                rewinds: 0,
                wake: Arc::clone(&wake),
                log: VecDeque::new(),
                failing_since_ms: None,
                next_attempt_ms: None,
                last_error: None,
            },
        );
        tokio::spawn(worker(Arc::clone(&self.inner), id, wake));
    }

    /// Replaces an endpoint (and optionally its cursor) under its worker,
    /// which starts over.
    fn replace(&self, endpoint: Endpoint, cursor: Option<u64>) {
        let mut endpoints = self.lock();
        if let Some(slot) = endpoints.get_mut(&endpoint.id) {
            if let Some(cursor) = cursor {
                slot.cursor = cursor;
                slot.rewinds += 1;
            }
            let fresh = cursor.is_some()
                || (endpoint.enabled && !slot.endpoint.enabled)
                || endpoint.url != slot.endpoint.url;
            if fresh {
                // A replay, an endpoint enabled again or a new URL starts
                // with a clean slate: failures from before must not count
                // towards `disable_after_ms` (which would disable it again
                // at once).
                slot.failing_since_ms = None;
                slot.next_attempt_ms = None;
                slot.last_error = None;
            }
            slot.endpoint = endpoint;
            slot.generation += 1;
            slot.wake.notify_one();
        }
    }

    /// The kinds of events any registered endpoint wants. Disabled ones
    /// count too: enabled again, an endpoint resumes where it stopped, so the
    /// events made meanwhile must exist (within the `engine.events`
    /// retention), whether or not another endpoint wants them.
    fn interest(&self) -> EventKinds {
        self.inner.interest()
    }

    /// Tells the engine which kinds of events anyone wants.
    fn update_interest(&self) {
        self.inner.db.want_events(self.interest());
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Saves an endpoint's position as it is in memory now, under the lock
    /// that moves it, without waiting for `fsync` (a position lost to a crash
    /// only repeats deliveries).
    fn persist_cursor(&self, id: &str) -> Result<(), WebhookError> {
        let endpoints = self.lock();
        if let Some(slot) = endpoints.get(id) {
            self.db.put_setting_eventually(
                &format!("{CURSOR_PREFIX}{id}"),
                Some(slot.cursor.to_string()),
            )?;
        }
        Ok(())
    }

    /// The endpoint, cursor and generation of a worker, or `None` once the
    /// endpoint is deleted.
    fn current(&self, id: &str) -> Option<Position> {
        self.lock().get(id).map(|slot| Position {
            endpoint: slot.endpoint.clone(),
            cursor: slot.cursor,
            generation: slot.generation,
            rewinds: slot.rewinds,
        })
    }

    /// Runs `change` on the worker's slot if its generation is still
    /// `generation`; returns whether it was.
    fn update(&self, id: &str, generation: u64, change: impl FnOnce(&mut Slot)) -> bool {
        let mut endpoints = self.lock();
        match endpoints.get_mut(id) {
            Some(slot) if slot.generation == generation => {
                change(slot);
                true
            }
            _ => false,
        }
    }

    fn record(&self, id: &str, delivery: Delivery) {
        let limit = self.config.delivery_log;
        if let Some(slot) = self.lock().get_mut(id) {
            while slot.log.len() >= limit {
                slot.log.pop_front();
            }
            slot.log.push_back(delivery);
        }
    }

    /// Disables an endpoint for `reason`, durably.
    fn disable(&self, id: &str, reason: String) {
        let endpoint = {
            let mut endpoints = self.lock();
            let Some(slot) = endpoints.get_mut(id) else {
                return;
            };
            slot.endpoint.enabled = false;
            slot.endpoint.disabled_reason = Some(reason.clone());
            slot.next_attempt_ms = None;
            slot.endpoint.clone()
        };
        warn!(id, reason, "webhook endpoint disabled");
        let json = serde_json::to_string(&endpoint).expect("endpoints serialize");
        if let Err(error) = self
            .db
            .put_setting(&format!("{ENDPOINT_PREFIX}{id}"), Some(json))
        {
            warn!(id, %error, "the disabled endpoint could not be saved");
        }
    }

    /// See [`Webhooks::interest`].
    fn interest(&self) -> EventKinds {
        self.lock()
            .values()
            .fold(EventKinds::default(), |kinds, slot| {
                kinds.with_all(slot.endpoint.kinds())
            })
    }

    /// Moves the cursor past an acknowledged event unless a replay set it
    /// since the attempt began. Returns whether it moved, and whether the
    /// worker's generation is still current.
    fn acknowledge(&self, id: &str, rewinds: u64, generation: u64, event: u64) -> (bool, bool) {
        let mut endpoints = self.lock();
        match endpoints.get_mut(id) {
            Some(slot) if slot.rewinds == rewinds => {
                slot.cursor = slot.cursor.max(event);
                slot.failing_since_ms = None;
                slot.next_attempt_ms = None;
                slot.last_error = None;
                (true, slot.generation == generation)
            }
            _ => (false, false),
        }
    }
}

/// Where a worker starts: its endpoint as it is, and its cursor.
struct Position {
    endpoint: Endpoint,
    cursor: u64,
    generation: u64,
    rewinds: u64,
}

/// What one attempt got.
enum Attempt {
    Delivered,
    Gone,
    Failed { retry_after: Option<Duration> },
}

/// An endpoint's worker: delivers its events in order until the endpoint is
/// deleted or the server shuts down.
async fn worker(inner: Arc<Inner>, id: String, wake: Arc<Notify>) {
    let mut events = inner.db.watch_events();
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(Position {
            endpoint,
            cursor,
            generation,
            rewinds,
        }) = inner.current(&id)
        else {
            return;
        };
        if !endpoint.enabled {
            tokio::select! {
                () = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // Subscribe before reading, so an event made in between still wakes us.
        events.borrow_and_update();
        let batch = inner.db.events_after(cursor, READ_BATCH);
        if let Some(first) = batch.first()
            && first.id > cursor + 1
        {
            note_missed(&inner, &id, generation, cursor, first.id);
        }
        let Some(last) = batch.last().map(|event| event.id) else {
            tokio::select! {
                _ = events.changed() => {}
                () = wake.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        // `through`: the last event handled; `noted`: the last position in the
        // slot (a delivery moves and saves it; skipped events only move
        // `through`, noted before the next delivery or at the batch's end).
        let (mut through, mut noted) = (cursor, cursor);
        let mut interrupted = false;
        for event in &batch {
            if !endpoint.wants(event) {
                through = event.id;
                continue;
            }
            if through > noted {
                inner.update(&id, generation, |slot| slot.cursor = through);
            }
            let at = (generation, rewinds);
            if deliver(&inner, &id, &endpoint, at, event, &wake, &mut shutdown).await == Some(true)
            {
                (through, noted) = (event.id, event.id);
            } else {
                interrupted = true;
                break;
            }
        }
        if !interrupted && through == last && through > noted {
            let moved = inner.update(&id, generation, |slot| slot.cursor = through);
            if moved && let Err(error) = inner.persist_cursor(&id) {
                warn!(id, %error, "the webhook position could not be saved");
            }
        }
    }
}

/// Sends one event until it is delivered. `Some(true)`: delivered;
/// `Some(false)`: the endpoint was disabled, changed or replayed (start
/// over); `None`: shutting down.
async fn deliver(
    inner: &Inner,
    id: &str,
    endpoint: &Endpoint,
    (generation, rewinds): (u64, u64),
    event: &Event,
    wake: &Notify,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let namespace = inner.namespace.get().map_or("", String::as_str);
    let message_id = message_id(namespace, event.id);
    let body = payload(event, &message_id);
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let started = Instant::now();
        let time_ms = now_ms();
        let result = send(inner, endpoint, &message_id, &body, time_ms).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error, verdict) = match result {
            Ok((status, retry_after)) => classify(status, retry_after),
            Err(error) => (None, Some(error), Attempt::Failed { retry_after: None }),
        };
        let mut delivery = Delivery {
            event: event.id,
            kind: Some(event.kind),
            attempt,
            time_ms,
            status,
            error: error.clone(),
            duration_ms,
            outcome: Outcome::Delivered,
        };
        match verdict {
            Attempt::Delivered => {
                inner.record(id, delivery);
                let (moved, current) = inner.acknowledge(id, rewinds, generation, event.id);
                if moved && let Err(error) = inner.persist_cursor(id) {
                    warn!(id, %error, "the webhook position could not be saved");
                }
                debug!(
                    id,
                    event = event.id,
                    attempt,
                    duration_ms,
                    "webhook delivered"
                );
                return Some(current);
            }
            Attempt::Gone => {
                delivery.outcome = Outcome::Disabled;
                inner.record(id, delivery);
                inner.disable(id, "the endpoint answered 410 Gone".to_owned());
                return Some(false);
            }
            Attempt::Failed { retry_after } => {
                let failing_since = inner
                    .lock()
                    .get(id)
                    .and_then(|slot| slot.failing_since_ms)
                    .unwrap_or(time_ms);
                let failing_for = time_ms.saturating_sub(failing_since);
                if failing_for >= inner.config.disable_after_ms {
                    delivery.outcome = Outcome::Disabled;
                    inner.record(id, delivery);
                    inner.disable(
                        id,
                        format!("every attempt failed for {} s", failing_for / 1_000),
                    );
                    return Some(false);
                }
                let delay = backoff(&inner.config, attempt, retry_after);
                delivery.outcome = Outcome::Retrying;
                inner.record(id, delivery);
                let next = time_ms + u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let reason = error.unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0)));
                warn!(
                    id,
                    event = event.id,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    reason,
                    "webhook delivery failed"
                );
                let current = inner.update(id, generation, |slot| {
                    slot.failing_since_ms = Some(failing_since);
                    slot.next_attempt_ms = Some(next);
                    slot.last_error = Some(reason);
                });
                if !current {
                    return Some(false);
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = wake.notified() => return Some(false),
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Sends one attempt: the status and any `Retry-After`, or what failed.
async fn send(
    inner: &Inner,
    endpoint: &Endpoint,
    message_id: &str,
    body: &[u8],
    now_ms: u64,
) -> Result<(u16, Option<Duration>), String> {
    // IP literals are checked here; host names by the resolver, at connect.
    let url = guard::check_url(&endpoint.url, &inner.policy).map_err(|error| error.to_string())?;
    let timestamp = i64::try_from(now_ms / 1_000).unwrap_or(i64::MAX);
    let secrets = endpoint.signing_secrets(now_ms);
    let signature = sign::signature_header(&secrets, message_id, timestamp, body);
    let mut response = inner
        .client
        .post(url)
        .header("content-type", "application/json")
        .header(sign::HEADER_ID, message_id)
        .header(sign::HEADER_TIMESTAMP, timestamp.to_string())
        .header(sign::HEADER_SIGNATURE, signature)
        .body(body.to_vec())
        .send()
        .await
        .map_err(|error| describe(&error))?;
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after);
    let status = response.status().as_u16();
    // Read a short body to its end (and drop it), so that the connection
    // goes back to the pool: a response dropped unread closes it, and the
    // next delivery would pay a new connection (and TLS handshake). What the
    // body says does not matter, nor whether it can be read.
    let mut read = 0_usize;
    while read < DRAIN_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
    Ok((status, retry_after))
}

/// A reqwest error with its causes (the guard's refusal is a cause).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(status: u16, retry_after: Option<Duration>) -> (Option<u16>, Option<String>, Attempt) {
    let verdict = match status {
        200..=299 => Attempt::Delivered,
        410 => Attempt::Gone,
        _ => Attempt::Failed { retry_after },
    };
    let error = match status {
        200..=299 => None,
        300..=399 => Some(format!("HTTP {status}: redirects are not followed")),
        _ => Some(format!("HTTP {status}")),
    };
    (Some(status), error, verdict)
}

/// The delay before attempt `attempt + 1`: exponential from `retry_base_ms`
/// with jitter (between half and all of it), at least what `Retry-After`
/// asked, at most `retry_max_ms`.
fn backoff(config: &WebhookConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let full = config
        .retry_base_ms
        .saturating_mul(1_u64 << exponent)
        .min(config.retry_max_ms);
    let jittered = full / 2 + fastrand::u64(0..=full - full / 2);
    let asked = retry_after.map_or(0, |after| {
        u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
    });
    Duration::from_millis(jittered.max(asked).min(config.retry_max_ms))
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn note_missed(inner: &Inner, id: &str, generation: u64, cursor: u64, first: u64) {
    warn!(
        id,
        missed = first - cursor - 1,
        through = first - 1,
        "webhook endpoint fell behind the event retention; the oldest events are lost to it"
    );
    inner.record(
        id,
        Delivery {
            event: first - 1,
            kind: None,
            attempt: 0,
            time_ms: now_ms(),
            status: None,
            error: Some(format!(
                "events {} to {} were dropped by the retention before delivery",
                cursor + 1,
                first - 1
            )),
            duration_ms: 0,
            outcome: Outcome::Missed,
        },
    );
    inner.update(id, generation, |slot| slot.cursor = first - 1);
}

/// The `webhook-id` of an event: stable across retries, restarts and replays.
/// On a cluster node (`namespace` is its name) it names the node, whose
/// event ids are its own.
pub fn message_id(namespace: &str, event: u64) -> String {
    if namespace.is_empty() {
        format!("evt_{event}")
    } else {
        format!("evt_{namespace}_{event}")
    }
}

/// The body of a delivery (Standard Webhooks payload: `type`, `timestamp`,
/// `data`).
pub fn payload(event: &Event, message_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "id": message_id,
        "type": event.kind.name(),
        "timestamp": rfc3339(event.time_ms),
        "data": event.data,
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

fn parse_kinds(names: &[String]) -> Result<Vec<EventKind>, WebhookError> {
    if names.iter().any(|name| name == "*") {
        return Ok(EventKind::ALL.to_vec());
    }
    if names.is_empty() {
        return Err(WebhookError::Invalid(
            "`events` must name at least one event kind, or \"*\"".to_owned(),
        ));
    }
    let mut kinds = Vec::with_capacity(names.len());
    for name in names {
        let kind = EventKind::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.name()).collect();
            WebhookError::Invalid(format!(
                "unknown event kind `{name}`; known: {}",
                known.join(", ")
            ))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

fn unknown(id: &str) -> WebhookError {
    WebhookError::UnknownEndpoint { id: id.to_owned() }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Epoch milliseconds as RFC 3339 in UTC, with milliseconds.
fn rfc3339(ms: u64) -> String {
    let days = i64::try_from(ms / 86_400_000).unwrap_or(i64::MAX);
    let rest = ms % 86_400_000;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1_000 % 60,
        rest % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_614_265_330_123), "2021-02-25T15:02:10.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let config = WebhookConfig {
            retry_base_ms: 100,
            retry_max_ms: 10_000,
            ..WebhookConfig::default()
        };
        for attempt in 1..=12 {
            let full = (100_u64 << (attempt - 1)).min(10_000);
            let delay = backoff(&config, attempt, None).as_millis() as u64;
            assert!((full / 2..=full).contains(&delay), "{attempt}: {delay}");
        }
        let asked = backoff(&config, 1, Some(Duration::from_secs(5)));
        assert_eq!(asked, Duration::from_secs(5));
        let capped = backoff(&config, 1, Some(Duration::from_secs(500)));
        assert_eq!(capped, Duration::from_millis(10_000));
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn event_kinds_parse_by_name_or_star() {
        assert_eq!(
            parse_kinds(&["*".to_owned()]).expect("all"),
            EventKind::ALL.to_vec()
        );
        assert_eq!(
            parse_kinds(&["record.created".to_owned(), "record.created".to_owned()]).expect("one"),
            [EventKind::RecordCreated]
        );
        assert!(parse_kinds(&[]).is_err());
        let error = parse_kinds(&["record.eaten".to_owned()]).expect_err("unknown");
        assert!(error.to_string().contains("record.created"));
    }
}
