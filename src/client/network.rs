//! A simulated network between the client and any transport: latency and
//! bandwidth per direction, and faults from a script or a seeded plan.
//!
//! Time passes through `tokio::time`, so tests under paused time
//! (`#[tokio::test(start_paused = true)]`) run instantly and exactly: an exchange
//! takes `latency_up + request/bandwidth_up + latency_down + answer/bandwidth_down`
//! of virtual time (plus the server's own work, which pauses nothing). Exchanges
//! do not share bandwidth: each is timed as if alone on the link.
//!
//! Faults, for each exchange in turn: the next one of the script, or else one
//! drawn from the seeded [`FaultRates`]:
//! - drop the request before it reaches the server;
//! - deliver the request, let the server apply it, and lose the answer (what
//!   makes idempotent retries necessary);
//! - cut a message after some byte, or flip a byte of it, in either direction
//!   (the receiver must refuse it);
//! - go offline for a while: exchanges fail at once until the time is up.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::client::error::TransportError;
use crate::client::transport::Transport;

/// Latency and bandwidth of the link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkConditions {
    /// One-way delay from client to server.
    pub latency_up: Duration,
    /// One-way delay from server to client.
    pub latency_down: Duration,
    /// Bytes per second upward; unlimited when `None`.
    pub bandwidth_up: Option<u64>,
    /// Bytes per second downward; unlimited when `None`.
    pub bandwidth_down: Option<u64>,
}

impl NetworkConditions {
    /// No delay, unlimited bandwidth.
    pub fn ideal() -> NetworkConditions {
        NetworkConditions::default()
    }

    /// A typical mobile link: 50 ms each way, 1.25 MB/s down, 0.5 MB/s up.
    pub fn lte() -> NetworkConditions {
        NetworkConditions {
            latency_up: Duration::from_millis(50),
            latency_down: Duration::from_millis(50),
            bandwidth_up: Some(500_000),
            bandwidth_down: Some(1_250_000),
        }
    }

    /// The time `bytes` take upward.
    pub fn up_time(&self, bytes: usize) -> Duration {
        self.latency_up + transfer(bytes, self.bandwidth_up)
    }

    /// The time `bytes` take downward.
    pub fn down_time(&self, bytes: usize) -> Duration {
        self.latency_down + transfer(bytes, self.bandwidth_down)
    }
}

fn transfer(bytes: usize, bandwidth: Option<u64>) -> Duration {
    match bandwidth {
        Some(per_second) if per_second > 0 => {
            Duration::from_secs_f64(bytes as f64 / per_second as f64)
        }
        _ => Duration::ZERO,
    }
}

/// What happens to one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Delivered both ways.
    None,
    /// The request never reaches the server.
    DropRequest,
    /// The server gets and applies the request; its answer is lost.
    LoseResponse,
    /// The server gets only the first `keep` bytes (at most all but one).
    TruncateRequest { keep: usize },
    /// The client gets only the first `keep` bytes of the answer (at most all but one).
    TruncateResponse { keep: usize },
    /// Byte `at` (modulo the length) of the request is flipped.
    CorruptRequest { at: usize },
    /// Byte `at` (modulo the length) of the answer is flipped.
    CorruptResponse { at: usize },
    /// The link goes down for this long, starting with this exchange.
    Disconnect(Duration),
}

/// Probabilities of each fault per exchange, for a seeded random plan. They
/// should add up to at most 1; the rest of the time nothing goes wrong.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultRates {
    pub drop_request: f64,
    pub lose_response: f64,
    pub truncate_request: f64,
    pub truncate_response: f64,
    pub corrupt_request: f64,
    pub corrupt_response: f64,
    pub disconnect: f64,
    /// How long a drawn disconnection lasts.
    pub disconnect_for: Duration,
}

/// What went over the simulated link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub exchanges: u64,
    /// Answers delivered to the client (whole or damaged).
    pub delivered: u64,
    /// Request bytes sent by the client (damaged or dropped ones included).
    pub bytes_up: u64,
    /// Answer bytes that reached the client.
    pub bytes_down: u64,
    pub requests_dropped: u64,
    pub responses_lost: u64,
    pub requests_truncated: u64,
    pub responses_truncated: u64,
    pub requests_corrupted: u64,
    pub responses_corrupted: u64,
    pub disconnects: u64,
    /// Exchanges refused at once because the link was down.
    pub offline_refusals: u64,
}

/// A transport wrapped in a simulated network. Share it with `Arc` to change
/// conditions or read statistics while a client uses it.
#[derive(Debug)]
pub struct SimulatedNetwork<T> {
    inner: T,
    /// Held only to draw the next fault or update counters, never across `.await`.
    state: Mutex<LinkState>,
}

#[derive(Debug)]
struct LinkState {
    conditions: NetworkConditions,
    script: VecDeque<Fault>,
    rates: FaultRates,
    rng: fastrand::Rng,
    offline_until: Option<Instant>,
    stats: NetworkStats,
}

/// Which kind of fault a random draw picked; positions are drawn once the
/// message length is known.
#[derive(Clone, Copy)]
enum Kind {
    DropRequest,
    LoseResponse,
    TruncateRequest,
    TruncateResponse,
    CorruptRequest,
    CorruptResponse,
    Disconnect,
}

impl<T: Transport> SimulatedNetwork<T> {
    /// `inner` behind a link with these conditions and no faults.
    pub fn new(inner: T, conditions: NetworkConditions) -> SimulatedNetwork<T> {
        SimulatedNetwork {
            inner,
            state: Mutex::new(LinkState {
                conditions,
                script: VecDeque::new(),
                rates: FaultRates::default(),
                rng: fastrand::Rng::with_seed(0),
                offline_until: None,
                stats: NetworkStats::default(),
            }),
        }
    }

    /// Draws faults at these rates from a generator seeded with `seed`.
    pub fn with_faults(self, seed: u64, rates: FaultRates) -> SimulatedNetwork<T> {
        {
            let mut state = self.lock();
            state.rng = fastrand::Rng::with_seed(seed);
            state.rates = rates;
        }
        self
    }

    /// Queues faults for the next exchanges, in order, before any random ones.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().script.extend(faults);
    }

    pub fn set_conditions(&self, conditions: NetworkConditions) {
        self.lock().conditions = conditions;
    }

    pub fn set_rates(&self, rates: FaultRates) {
        self.lock().rates = rates;
    }

    /// Takes the link down for `duration` from now.
    pub fn disconnect_for(&self, duration: Duration) {
        let mut state = self.lock();
        state.offline_until = Some(Instant::now() + duration);
        state.stats.disconnects += 1;
    }

    /// Brings the link back up now.
    pub fn reconnect(&self) {
        self.lock().offline_until = None;
    }

    pub fn stats(&self) -> NetworkStats {
        self.lock().stats
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, LinkState> {
        // Every update is a single assignment or counter step: a poisoned lock is
        // still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fault for this exchange and the conditions, or `Disconnected`.
    fn begin(&self) -> Result<(Option<Kind>, Fault, NetworkConditions), TransportError> {
        let mut state = self.lock();
        state.stats.exchanges += 1;
        if state
            .offline_until
            .is_some_and(|until| Instant::now() < until)
        {
            state.stats.offline_refusals += 1;
            return Err(TransportError::Disconnected);
        }
        let (kind, fault) = match state.script.pop_front() {
            Some(fault) => (None, fault),
            None => (state.draw(), Fault::None),
        };
        let disconnect = match (kind, &fault) {
            (Some(Kind::Disconnect), _) => Some(state.rates.disconnect_for),
            (_, Fault::Disconnect(duration)) => Some(*duration),
            _ => None,
        };
        if let Some(duration) = disconnect {
            state.offline_until = Some(Instant::now() + duration);
            state.stats.disconnects += 1;
            return Err(TransportError::Disconnected);
        }
        Ok((kind, fault, state.conditions.clone()))
    }

    /// A drawn fault with its position in a message of `len` bytes.
    fn resolve(&self, kind: Kind, len: usize) -> Fault {
        let at = self.lock().rng.usize(..len.max(1));
        match kind {
            Kind::DropRequest => Fault::DropRequest,
            Kind::LoseResponse => Fault::LoseResponse,
            Kind::TruncateRequest => Fault::TruncateRequest { keep: at },
            Kind::TruncateResponse => Fault::TruncateResponse { keep: at },
            Kind::CorruptRequest => Fault::CorruptRequest { at },
            Kind::CorruptResponse => Fault::CorruptResponse { at },
            Kind::Disconnect => Fault::None,
        }
    }

    fn count(&self, update: impl FnOnce(&mut NetworkStats)) {
        update(&mut self.lock().stats);
    }
}

impl LinkState {
    fn draw(&mut self) -> Option<Kind> {
        let rates = &self.rates;
        let table = [
            (rates.drop_request, Kind::DropRequest),
            (rates.lose_response, Kind::LoseResponse),
            (rates.truncate_request, Kind::TruncateRequest),
            (rates.truncate_response, Kind::TruncateResponse),
            (rates.corrupt_request, Kind::CorruptRequest),
            (rates.corrupt_response, Kind::CorruptResponse),
            (rates.disconnect, Kind::Disconnect),
        ];
        if table.iter().all(|(rate, _)| *rate <= 0.0) {
            return None;
        }
        let mut roll = self.rng.f64();
        for (rate, kind) in table {
            if roll < rate {
                return Some(kind);
            }
            roll -= rate;
        }
        None
    }
}

/// Cuts `message` to `keep` bytes, always removing at least one.
fn truncate(message: &mut Vec<u8>, keep: usize) {
    message.truncate(keep.min(message.len().saturating_sub(1)));
}

/// Flips every bit of byte `at` (modulo the length).
fn corrupt(message: &mut [u8], at: usize) {
    let len = message.len();
    if len > 0 {
        message[at % len] ^= 0xFF;
    }
}

impl<T: Transport> Transport for SimulatedNetwork<T> {
    async fn exchange(&self, mut request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let (kind, scripted, conditions) = self.begin()?;
        let fault = match kind {
            Some(Kind::TruncateResponse | Kind::CorruptResponse) => Fault::None,
            Some(kind) => self.resolve(kind, request.len()),
            None => scripted,
        };
        match fault {
            Fault::TruncateRequest { keep } => {
                truncate(&mut request, keep);
                self.count(|stats| stats.requests_truncated += 1);
            }
            Fault::CorruptRequest { at } => {
                corrupt(&mut request, at);
                self.count(|stats| stats.requests_corrupted += 1);
            }
            _ => {}
        }
        let sent = request.len();
        tokio::time::sleep(conditions.up_time(sent)).await;
        self.count(|stats| stats.bytes_up += sent as u64);
        if fault == Fault::DropRequest {
            self.count(|stats| stats.requests_dropped += 1);
            return Err(TransportError::RequestDropped);
        }
        let mut response = self.inner.exchange(request).await?;
        if fault == Fault::LoseResponse {
            self.count(|stats| stats.responses_lost += 1);
            return Err(TransportError::ResponseLost);
        }
        let fault = match kind {
            Some(kind @ (Kind::TruncateResponse | Kind::CorruptResponse)) => {
                self.resolve(kind, response.len())
            }
            _ => fault,
        };
        match fault {
            Fault::TruncateResponse { keep } => {
                truncate(&mut response, keep);
                self.count(|stats| stats.responses_truncated += 1);
            }
            Fault::CorruptResponse { at } => {
                corrupt(&mut response, at);
                self.count(|stats| stats.responses_corrupted += 1);
            }
            _ => {}
        }
        tokio::time::sleep(conditions.down_time(response.len())).await;
        self.count(|stats| {
            stats.bytes_down += response.len() as u64;
            stats.delivered += 1;
        });
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    /// Answers every request with its reversed bytes.
    #[derive(Debug)]
    struct Mirror;

    impl Transport for Mirror {
        fn exchange(
            &self,
            mut request: Vec<u8>,
        ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send {
            request.reverse();
            std::future::ready(Ok(request))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_exchange_takes_latency_plus_bytes_over_bandwidth() {
        let conditions = NetworkConditions {
            latency_up: Duration::from_millis(40),
            latency_down: Duration::from_millis(60),
            bandwidth_up: Some(1_000),
            bandwidth_down: Some(10_000),
        };
        let network = SimulatedNetwork::new(Mirror, conditions);
        let started = Instant::now();
        let answer = network.exchange(vec![7; 500]).await.expect("delivered");
        assert_eq!(answer.len(), 500);
        // 40 ms + 500 B at 1 kB/s, then 60 ms + 500 B at 10 kB/s.
        assert_eq!(started.elapsed(), Duration::from_millis(40 + 500 + 60 + 50));
        let stats = network.stats();
        assert_eq!((stats.bytes_up, stats.bytes_down), (500, 500));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_faults_apply_in_order_then_the_link_is_clean() {
        let network = SimulatedNetwork::new(Mirror, NetworkConditions::ideal());
        network.script([
            Fault::DropRequest,
            Fault::LoseResponse,
            Fault::TruncateResponse { keep: 3 },
            Fault::CorruptResponse { at: 0 },
        ]);
        let request = vec![1, 2, 3, 4, 5];
        assert!(matches!(
            network.exchange(request.clone()).await,
            Err(TransportError::RequestDropped)
        ));
        assert!(matches!(
            network.exchange(request.clone()).await,
            Err(TransportError::ResponseLost)
        ));
        assert_eq!(
            network.exchange(request.clone()).await.expect("cut"),
            [5, 4, 3]
        );
        assert_eq!(
            network.exchange(request.clone()).await.expect("flipped"),
            [5 ^ 0xFF, 4, 3, 2, 1]
        );
        assert_eq!(
            network.exchange(request).await.expect("clean"),
            [5, 4, 3, 2, 1]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnection_refuses_exchanges_until_it_ends() {
        let network = SimulatedNetwork::new(Mirror, NetworkConditions::ideal());
        network.script([Fault::Disconnect(Duration::from_secs(10))]);
        assert!(network.exchange(vec![1]).await.is_err());
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(matches!(
            network.exchange(vec![1]).await,
            Err(TransportError::Disconnected)
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(network.exchange(vec![1]).await.is_ok());
        assert_eq!(network.stats().offline_refusals, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_seeded_plan_is_reproducible() {
        let rates = FaultRates {
            drop_request: 0.2,
            truncate_response: 0.2,
            corrupt_request: 0.1,
            ..FaultRates::default()
        };
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let network = SimulatedNetwork::new(Mirror, NetworkConditions::ideal())
                .with_faults(42, rates.clone());
            let mut run = Vec::new();
            for n in 0..50_u8 {
                run.push(network.exchange(vec![n; 20]).await.ok());
            }
            outcomes.push(run);
        }
        assert_eq!(outcomes[0], outcomes[1]);
        assert!(outcomes[0].iter().any(Option::is_none));
        assert!(
            outcomes[0]
                .iter()
                .any(|answer| answer.as_ref().is_some_and(|a| a.len() < 20))
        );
    }
}
