//! The energy a phone spends on syncing: its radio and its CPU.
//!
//! - [`Radio`]: the kind of link (LTE, 3G, Wi-Fi) a phone syncs over.
//! - [`RadioModel`]: a radio's power states, after the AT&T ARO profiles
//!   (Huang et al., "A Close Examination of Performance and Power
//!   Characteristics of 4G LTE Networks", 2012): the promotion out of idle
//!   ([`promotion`](RadioModel::promotion) at
//!   [`promotion_watts`](RadioModel::promotion_watts)), the transfer
//!   (`β·t + α_u·Mbit_up + α_d·Mbit_down`), and the tail the radio stays in after
//!   the last packet ([`TailStage`]s).
//! - [`Transfer`]: bytes sent and received at one moment of the day.
//! - [`account`]: the radio's state machine run over a day of [`Transfer`]s,
//!   giving an [`EnergyReport`] (promotions paid, joules per state, time out
//!   of idle).
//! - [`CpuModel`]: what the phone's CPU spends per second of work; callers add
//!   it to a report with [`EnergyReport::add_cpu`].
//! - [`BATTERY_JOULES`]: the battery the reports are measured against
//!   ([`EnergyReport::battery_pct`]).
//!
//! Per sync session k the model charges
//!
//! ```text
//! E_k = [radio idle]·P_pro·T_pro + β·t_xfer + α_u·Mbit_up + α_d·Mbit_down
//!       + P_tail·min(gap_to_next, T_tail) + P_cpu·t_cpu
//! ```
//!
//! where a Mbit is 1,000,000 bits and `t_xfer` is the bytes over the link's
//! assumed throughput.

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The energy in a full battery, in joules: 2,700 mAh at 3.85 V is
/// 2.7 Ah × 3.85 V × 3600 s/h = 37,422 J.
pub const BATTERY_JOULES: f64 = 37_422.0;

/// Bits in a megabit (decimal, as link rates are quoted).
const BITS_PER_MBIT: f64 = 1_000_000.0;

/// The kind of radio link a phone syncs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Radio {
    /// 4G LTE (ARO's AT&T LTE profile).
    Lte,
    /// 3G UMTS (ARO's 3G profile: DCH and FACH states).
    ThreeG,
    /// Wi-Fi (802.11, ARO's Wi-Fi profile).
    Wifi,
}

impl Radio {
    /// Every radio, in the order reports list them.
    pub const ALL: [Radio; 3] = [Radio::Lte, Radio::ThreeG, Radio::Wifi];

    /// The radio's short name: `lte`, `3g` or `wifi`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Radio::Lte => "lte",
            Radio::ThreeG => "3g",
            Radio::Wifi => "wifi",
        }
    }
}

impl fmt::Display for Radio {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A radio name that is not `lte`, `3g` or `wifi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseRadioError {
    found: String,
}

impl fmt::Display for ParseRadioError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "unknown radio `{}`; expected one of: lte, 3g, wifi",
            self.found
        )
    }
}

impl Error for ParseRadioError {}

impl FromStr for Radio {
    type Err = ParseRadioError;

    /// Accepts [`Radio::name`] in any case.
    fn from_str(input: &str) -> Result<Radio, ParseRadioError> {
        match input.trim().to_ascii_lowercase().as_str() {
            "lte" => Ok(Radio::Lte),
            "3g" => Ok(Radio::ThreeG),
            "wifi" => Ok(Radio::Wifi),
            _ => Err(ParseRadioError {
                found: input.to_owned(),
            }),
        }
    }
}

/// One stage of a radio's tail: after its last packet the radio stays this
/// long at this power before it moves to the next stage (or to idle).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TailStage {
    /// How long the radio stays in this stage.
    pub duration: Duration,
    /// The radio's power in this stage, in watts.
    pub watts: f64,
}

/// A radio's power states: promotion out of idle, transfer, and tail.
#[derive(Clone, Debug, PartialEq)]
pub struct RadioModel {
    /// How long the radio takes to leave idle before it can send.
    pub promotion: Duration,
    /// The power during the promotion, in watts.
    pub promotion_watts: f64,
    /// The stages the radio goes through after its last packet, in order,
    /// before it is idle again.
    pub tail: Vec<TailStage>,
    /// β: the power while transferring, in watts (J/s of transfer time).
    pub transfer_watts: f64,
    /// `α_u`: the energy per megabit sent on top of β, in joules per Mbit.
    pub up_joules_per_mbit: f64,
    /// `α_d`: the energy per megabit received on top of β, in joules per Mbit.
    pub down_joules_per_mbit: f64,
    /// The assumed uplink throughput, in megabits per second.
    pub up_mbps: f64,
    /// The assumed downlink throughput, in megabits per second.
    pub down_mbps: f64,
}

impl RadioModel {
    /// LTE after ARO's AT&T profile: promotion 0.26 s at 1.21 W; tail 10.1 s
    /// at 1.06 W; transfer power 438.39 mW/Mbps × up + 51.97 mW/Mbps × down +
    /// 1.2 W, so β = 1.2 W, `α_u` = 0.43839 J/Mbit, `α_d` = 0.05197 J/Mbit; links
    /// of 5.64 Mbps up and 12.74 Mbps down.
    #[must_use]
    pub fn lte() -> RadioModel {
        RadioModel {
            promotion: Duration::from_millis(260),
            promotion_watts: 1.21,
            tail: vec![TailStage {
                duration: Duration::from_millis(10_100),
                watts: 1.06,
            }],
            transfer_watts: 1.2,
            up_joules_per_mbit: 0.438_39,
            down_joules_per_mbit: 0.051_97,
            up_mbps: 5.64,
            down_mbps: 12.74,
        }
    }

    /// 3G after ARO: promotion 2 s at 0.53 W; tail 5 s in DCH at 0.7 W, then
    /// 12 s in FACH at 0.35 W; transfer at DCH's 0.7 W with no per-bit cost;
    /// links of 0.5 Mbps up and 2.0 Mbps down.
    #[must_use]
    pub fn three_g() -> RadioModel {
        RadioModel {
            promotion: Duration::from_secs(2),
            promotion_watts: 0.53,
            tail: vec![
                TailStage {
                    duration: Duration::from_secs(5),
                    watts: 0.7,
                },
                TailStage {
                    duration: Duration::from_secs(12),
                    watts: 0.35,
                },
            ],
            transfer_watts: 0.7,
            up_joules_per_mbit: 0.0,
            down_joules_per_mbit: 0.0,
            up_mbps: 0.5,
            down_mbps: 2.0,
        }
    }

    /// Wi-Fi after ARO: no promotion; active at 0.403 W with no per-bit cost;
    /// tail 0.25 s at 0.403 W; links of 10 Mbps up and 20 Mbps down.
    #[must_use]
    pub fn wifi() -> RadioModel {
        RadioModel {
            promotion: Duration::ZERO,
            promotion_watts: 0.0,
            tail: vec![TailStage {
                duration: Duration::from_millis(250),
                watts: 0.403,
            }],
            transfer_watts: 0.403,
            up_joules_per_mbit: 0.0,
            down_joules_per_mbit: 0.0,
            up_mbps: 10.0,
            down_mbps: 20.0,
        }
    }

    /// The model of `radio`: [`lte`](RadioModel::lte),
    /// [`three_g`](RadioModel::three_g) or [`wifi`](RadioModel::wifi).
    #[must_use]
    pub fn of(radio: Radio) -> RadioModel {
        match radio {
            Radio::Lte => RadioModel::lte(),
            Radio::ThreeG => RadioModel::three_g(),
            Radio::Wifi => RadioModel::wifi(),
        }
    }

    /// How long the radio stays out of idle after its last packet: the sum of
    /// the tail stages.
    #[must_use]
    pub fn tail_duration(&self) -> Duration {
        self.tail.iter().fold(Duration::ZERO, |sum, stage| {
            sum.saturating_add(stage.duration)
        })
    }

    /// The energy of one promotion out of idle, in joules.
    #[must_use]
    pub fn promotion_joules(&self) -> f64 {
        self.promotion_watts * self.promotion.as_secs_f64()
    }

    /// The energy of the first `within` of the tail, in joules, walking the
    /// stages in order (a `within` past the whole tail costs the whole tail).
    #[must_use]
    pub fn tail_joules(&self, within: Duration) -> f64 {
        let mut left = within;
        let mut joules = 0.0;
        for stage in &self.tail {
            let spent = left.min(stage.duration);
            joules += stage.watts * spent.as_secs_f64();
            left -= spent;
        }
        joules
    }

    /// The energy of waking the radio for a lone tiny exchange, in joules: a
    /// promotion and the full tail (about 11 J on LTE).
    #[must_use]
    pub fn wake_up_joules(&self) -> f64 {
        self.promotion_joules() + self.tail_joules(self.tail_duration())
    }

    /// How long sending `up_bytes` and receiving `down_bytes` takes at the
    /// assumed throughputs: up bits / up rate + down bits / down rate. Zero
    /// bytes take no time; a rate that is not positive makes the time
    /// saturate at [`Duration::MAX`].
    #[must_use]
    pub fn transfer_time(&self, up_bytes: u64, down_bytes: u64) -> Duration {
        let seconds = leg_seconds(up_bytes, self.up_mbps) + leg_seconds(down_bytes, self.down_mbps);
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    /// The energy of a transfer, in joules: `β·t + α_u·Mbit_up + α_d·Mbit_down`
    /// with t its [`transfer_time`](RadioModel::transfer_time).
    #[must_use]
    pub fn transfer_joules(&self, up_bytes: u64, down_bytes: u64) -> f64 {
        let time = self.transfer_time(up_bytes, down_bytes);
        self.transfer_watts * time.as_secs_f64()
            + self.up_joules_per_mbit * megabits(up_bytes)
            + self.down_joules_per_mbit * megabits(down_bytes)
    }
}

/// `bytes` in megabits (1,000,000 bits).
fn megabits(bytes: u64) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "byte counts of a day's sync are far below 2^53"
    )]
    let bits = bytes as f64 * 8.0;
    bits / BITS_PER_MBIT
}

/// Seconds to move `bytes` at `mbps` (zero for zero bytes, infinite for a rate
/// that is not positive).
fn leg_seconds(bytes: u64, mbps: f64) -> f64 {
    if bytes == 0 {
        0.0
    } else if mbps > 0.0 {
        megabits(bytes) / mbps
    } else {
        f64::INFINITY
    }
}

/// Bytes sent and received at one moment of the day. One network exchange may
/// be two transfers: the request's bytes when it is sent and the answer's bytes
/// when the answer comes (as with a long poll).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// When the bytes are sent, as time since the start of the day.
    pub at: Duration,
    /// Bytes the phone sends.
    pub up_bytes: u64,
    /// Bytes the phone receives.
    pub down_bytes: u64,
}

/// What the phone's CPU spends on work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuModel {
    /// The power of one busy core, in watts.
    pub busy_watts: f64,
    /// How many seconds of the phone's core one measured CPU second becomes
    /// (a phone core is slower than the machine that measured it); unitless.
    pub scale: f64,
}

impl CpuModel {
    /// One big mobile core: busy at 1.4 W, CPU time taken as measured
    /// (scale 1.0).
    #[must_use]
    pub fn phone() -> CpuModel {
        CpuModel {
            busy_watts: 1.4,
            scale: 1.0,
        }
    }

    /// The energy of `cpu` of measured CPU time, in joules:
    /// busy watts × scale × seconds.
    #[must_use]
    pub fn joules(&self, cpu: Duration) -> f64 {
        self.busy_watts * self.scale * cpu.as_secs_f64()
    }
}

/// The energy a day of transfers costs on one radio, split by state, with the
/// CPU's share once added.
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyReport {
    /// The radio the transfers went over.
    pub radio: Radio,
    /// Promotions paid: transfers that found the radio idle.
    pub wake_ups: u32,
    /// Transfers accounted.
    pub transfers: u32,
    /// Bytes sent, in total.
    pub bytes_up: u64,
    /// Bytes received, in total.
    pub bytes_down: u64,
    /// Energy of the promotions out of idle, in joules.
    pub promotion_joules: f64,
    /// Energy of the transfers (β·t + α·Mbit), in joules.
    pub transfer_joules: f64,
    /// Energy of the tails between and after transfers, in joules.
    pub tail_joules: f64,
    /// Energy of the CPU's work, in joules (see [`EnergyReport::add_cpu`]).
    pub cpu_joules: f64,
    /// Time the radio was out of idle: promotion, transfer and tail time.
    pub active: Duration,
}

impl EnergyReport {
    /// An empty report for `radio`: no transfers, no energy.
    #[must_use]
    pub fn new(radio: Radio) -> EnergyReport {
        EnergyReport {
            radio,
            wake_ups: 0,
            transfers: 0,
            bytes_up: 0,
            bytes_down: 0,
            promotion_joules: 0.0,
            transfer_joules: 0.0,
            tail_joules: 0.0,
            cpu_joules: 0.0,
            active: Duration::ZERO,
        }
    }

    /// The radio's energy, in joules: promotion + transfer + tail.
    #[must_use]
    pub fn radio_joules(&self) -> f64 {
        self.promotion_joules + self.transfer_joules + self.tail_joules
    }

    /// All the energy, in joules: the radio's and the CPU's.
    #[must_use]
    pub fn total_joules(&self) -> f64 {
        self.radio_joules() + self.cpu_joules
    }

    /// All the energy as a percentage of a full battery ([`BATTERY_JOULES`]).
    #[must_use]
    pub fn battery_pct(&self) -> f64 {
        self.total_joules() / BATTERY_JOULES * 100.0
    }

    /// The CPU's share of all the energy, in percent (0 when there is none).
    #[must_use]
    pub fn cpu_share_pct(&self) -> f64 {
        let total = self.total_joules();
        if total > 0.0 {
            self.cpu_joules / total * 100.0
        } else {
            0.0
        }
    }

    /// Adds the energy of `cpu` of measured CPU time under `model`.
    pub fn add_cpu(&mut self, model: &CpuModel, cpu: Duration) {
        self.cpu_joules += model.joules(cpu);
    }
}

/// Runs `model`'s radio state machine over `transfers` (in any order; ties keep
/// their order) and reports the energy it spends.
///
/// A transfer that finds the radio idle (the first, or one at least a full
/// tail after the previous transfer ended) pays a promotion and starts after
/// it. One that comes during the tail pays the tail for the gap instead. One
/// that comes while another is in progress queues after it. Each transfer
/// lasts its [`transfer_time`](RadioModel::transfer_time) (a zero-byte one
/// still wakes the radio but takes no time), and the full tail follows the
/// last.
#[must_use]
pub fn account(radio: Radio, model: &RadioModel, transfers: &[Transfer]) -> EnergyReport {
    let mut sorted = transfers.to_vec();
    sorted.sort_by_key(|transfer| transfer.at);

    let tail = model.tail_duration();
    let full_tail_joules = model.tail_joules(tail);
    let mut report = EnergyReport::new(radio);
    // The end of the last transfer, once there is one.
    let mut busy_until: Option<Duration> = None;

    for transfer in &sorted {
        let start = busy_until.map_or(transfer.at, |busy| transfer.at.max(busy));
        let begin = match busy_until {
            Some(busy) if start.saturating_sub(busy) < tail || start == busy => {
                // Still in the tail (or queued behind a transfer): no promotion.
                let gap = start.saturating_sub(busy);
                report.tail_joules += model.tail_joules(gap);
                report.active = report.active.saturating_add(gap);
                start
            }
            idle => {
                if idle.is_some() {
                    // The previous transfer's tail ran out before this one.
                    report.tail_joules += full_tail_joules;
                    report.active = report.active.saturating_add(tail);
                }
                report.promotion_joules += model.promotion_joules();
                report.wake_ups = report.wake_ups.saturating_add(1);
                report.active = report.active.saturating_add(model.promotion);
                start.saturating_add(model.promotion)
            }
        };

        let time = model.transfer_time(transfer.up_bytes, transfer.down_bytes);
        report.transfer_joules += model.transfer_joules(transfer.up_bytes, transfer.down_bytes);
        report.active = report.active.saturating_add(time);
        busy_until = Some(begin.saturating_add(time));

        report.transfers = report.transfers.saturating_add(1);
        report.bytes_up = report.bytes_up.saturating_add(transfer.up_bytes);
        report.bytes_down = report.bytes_down.saturating_add(transfer.down_bytes);
    }

    if busy_until.is_some() {
        report.tail_joules += full_tail_joules;
        report.active = report.active.saturating_add(tail);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPSILON: f64 = 1e-9;

    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < EPSILON,
            "expected {expected}, got {actual}"
        );
    }

    fn at(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    /// A transfer of no bytes at `seconds` (a tiny exchange taking no time).
    fn ping(seconds: f64) -> Transfer {
        Transfer {
            at: at(seconds),
            up_bytes: 0,
            down_bytes: 0,
        }
    }

    #[test]
    fn radio_names_display_and_parse() {
        let names: Vec<String> = Radio::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["lte", "3g", "wifi"]);
        for radio in Radio::ALL {
            assert_eq!(radio.name().parse::<Radio>(), Ok(radio));
            assert!(!RadioModel::of(radio).tail.is_empty());
        }
        assert_eq!("WiFi".parse::<Radio>(), Ok(Radio::Wifi));
        let error = "5g".parse::<Radio>().expect_err("unknown radio");
        assert_eq!(
            error.to_string(),
            "unknown radio `5g`; expected one of: lte, 3g, wifi"
        );
    }

    #[test]
    fn model_constants_match_the_profiles() {
        let lte = RadioModel::lte();
        // 10.1 s in one stage.
        assert_eq!(lte.tail_duration(), Duration::from_millis(10_100));
        // 0.26 s × 1.21 W + 10.1 s × 1.06 W = 0.3146 + 10.706 = 11.0206 J.
        assert_close(lte.wake_up_joules(), 11.0206);
        let three_g = RadioModel::three_g();
        // 5 s + 12 s.
        assert_eq!(three_g.tail_duration(), Duration::from_secs(17));
        // 2 s × 0.53 W + 5 s × 0.7 W + 12 s × 0.35 W = 1.06 + 3.5 + 4.2 = 8.76 J.
        assert_close(three_g.wake_up_joules(), 8.76);
        // 2.7 Ah × 3.85 V × 3600 s/h = 37,422 J.
        assert_close(BATTERY_JOULES, 2.7 * 3.85 * 3600.0);
    }

    #[test]
    fn lone_tiny_lte_exchange_costs_a_promotion_and_a_full_tail() {
        let model = RadioModel::lte();
        let transfers = [Transfer {
            at: at(100.0),
            up_bytes: 200,
            down_bytes: 300,
        }];
        let report = account(Radio::Lte, &model, &transfers);
        assert_eq!(report.wake_ups, 1);
        assert_eq!(report.transfers, 1);
        assert_eq!((report.bytes_up, report.bytes_down), (200, 300));
        // 0.26 s × 1.21 W = 0.3146 J.
        assert_close(report.promotion_joules, 0.3146);
        // 10.1 s × 1.06 W = 10.706 J.
        assert_close(report.tail_joules, 10.706);
        // t = 1,600 bit / 5.64 Mbps + 2,400 bit / 12.74 Mbps
        //   = 0.000283688 + 0.000188383 = 0.000472071 s;
        // 1.2 W × t + 0.43839 × 0.0016 + 0.05197 × 0.0024
        //   = 0.000566485 + 0.000701424 + 0.000124728 = 0.001392637 J.
        let t = 1_600.0 / 5.64e6 + 2_400.0 / 12.74e6;
        assert_close(
            report.transfer_joules,
            1.2 * t + 0.438_39 * 0.0016 + 0.051_97 * 0.0024,
        );
        assert!((report.transfer_joules - 0.001_392_6).abs() < 1e-6);
        // 0.3146 + 10.706 + 0.0014 ≈ 11.022 J.
        assert!((report.radio_joules() - 11.022).abs() < 1e-3);
        assert_close(report.total_joules(), report.radio_joules());
        // Out of idle: 0.26 s promotion + t + 10.1 s tail.
        assert_close(report.active.as_secs_f64(), 10.36 + t);
    }

    #[test]
    fn two_lte_exchanges_three_seconds_apart_share_one_promotion() {
        let model = RadioModel::lte();
        let report = account(Radio::Lte, &model, &[ping(0.0), ping(3.0)]);
        assert_eq!(report.wake_ups, 1);
        // One promotion: 0.26 × 1.21 = 0.3146 J.
        assert_close(report.promotion_joules, 0.3146);
        // The first ends at 0.26 s (after its promotion), so the gap is
        // 3 − 0.26 = 2.74 s of tail: 2.74 × 1.06 = 2.9044 J; then the full
        // tail 10.706 J: 13.6104 J.
        assert_close(report.tail_joules, 2.9044 + 10.706);
        assert_close(report.transfer_joules, 0.0);
        // 0.3146 + 2.9044 + 10.706 = 13.925 J.
        assert_close(report.total_joules(), 13.925);
        // 0.26 + 2.74 + 10.1 = 13.1 s out of idle.
        assert_close(report.active.as_secs_f64(), 13.1);
    }

    #[test]
    fn two_lte_exchanges_a_minute_apart_wake_the_radio_twice() {
        let model = RadioModel::lte();
        let report = account(Radio::Lte, &model, &[ping(0.0), ping(60.0)]);
        assert_eq!(report.wake_ups, 2);
        // 2 × 0.3146 = 0.6292 J.
        assert_close(report.promotion_joules, 0.6292);
        // 2 × 10.706 = 21.412 J.
        assert_close(report.tail_joules, 21.412);
        // 2 × (0.26 + 10.1) = 20.72 s.
        assert_close(report.active.as_secs_f64(), 20.72);
    }

    #[test]
    fn exchange_exactly_a_tail_after_the_last_finds_the_radio_idle() {
        let model = RadioModel::lte();
        let ping_at_millis = |millis| Transfer {
            at: Duration::from_millis(millis),
            up_bytes: 0,
            down_bytes: 0,
        };
        // The first ends at 0.26 s; its tail ends at 0.26 + 10.1 = 10.36 s.
        let report = account(
            Radio::Lte,
            &model,
            &[ping_at_millis(0), ping_at_millis(10_360)],
        );
        assert_eq!(report.wake_ups, 2);
        // 1 ms earlier is still in the tail: 10.099 s × 1.06 + 10.706 J.
        let report = account(
            Radio::Lte,
            &model,
            &[ping_at_millis(0), ping_at_millis(10_359)],
        );
        assert_eq!(report.wake_ups, 1);
        assert_close(report.tail_joules, 10.099 * 1.06 + 10.706);
    }

    #[test]
    fn megabyte_down_and_up_on_lte() {
        let model = RadioModel::lte();
        // 1,000,000 bytes = 8 Mbit; down: t = 8 / 12.74 = 0.627943 s.
        assert_close(model.transfer_time(0, 1_000_000).as_secs_f64(), 8.0 / 12.74);
        // 1.2 × 0.627943 + 0.05197 × 8 = 0.753532 + 0.41576 = 1.169292 J.
        let down = model.transfer_joules(0, 1_000_000);
        assert_close(down, 1.2 * 8.0 / 12.74 + 0.051_97 * 8.0);
        assert!((down - 1.169_292).abs() < 1e-6);
        // Up: 1.2 × 8 / 5.64 + 0.43839 × 8 = 1.702128 + 3.50712 = 5.209248 J.
        let up = model.transfer_joules(1_000_000, 0);
        assert_close(up, 1.2 * 8.0 / 5.64 + 0.438_39 * 8.0);
        assert!((up - 5.209_248).abs() < 1e-6);

        let transfers = [Transfer {
            at: at(0.0),
            up_bytes: 0,
            down_bytes: 1_000_000,
        }];
        let report = account(Radio::Lte, &model, &transfers);
        assert_close(report.transfer_joules, down);
        // 0.3146 + 1.169292 + 10.706 = 12.189892 J.
        assert!((report.radio_joules() - 12.189_892).abs() < 1e-6);
    }

    #[test]
    fn three_g_gap_inside_the_tail_walks_both_stages() {
        let model = RadioModel::three_g();
        // The first ends at 2 s (its promotion); the second at 10 s: 8 s gap.
        let report = account(Radio::ThreeG, &model, &[ping(0.0), ping(10.0)]);
        assert_eq!(report.wake_ups, 1);
        // One promotion: 2 × 0.53 = 1.06 J.
        assert_close(report.promotion_joules, 1.06);
        // Gap: 5 × 0.7 + 3 × 0.35 = 3.5 + 1.05 = 4.55 J; full tail after:
        // 5 × 0.7 + 12 × 0.35 = 3.5 + 4.2 = 7.7 J; 12.25 J.
        assert_close(report.tail_joules, 4.55 + 7.7);
        // 2 + 8 + 17 = 27 s out of idle.
        assert_close(report.active.as_secs_f64(), 27.0);
    }

    #[test]
    fn three_g_gap_past_the_tail_pays_a_second_promotion() {
        let model = RadioModel::three_g();
        // The first ends at 2 s; the second at 22 s: 20 s gap > 17 s tail.
        let report = account(Radio::ThreeG, &model, &[ping(0.0), ping(22.0)]);
        assert_eq!(report.wake_ups, 2);
        // 2 × (2 × 0.53) = 2.12 J.
        assert_close(report.promotion_joules, 2.12);
        // 2 full tails: 2 × 7.7 = 15.4 J.
        assert_close(report.tail_joules, 15.4);
        // 2.12 + 15.4 = 17.52 J.
        assert_close(report.total_joules(), 17.52);
    }

    #[test]
    fn three_g_transfer_costs_dch_power_for_its_time() {
        let model = RadioModel::three_g();
        // 1,000,000 bytes down = 8 Mbit at 2 Mbps = 4 s; 4 × 0.7 = 2.8 J.
        assert_close(model.transfer_time(0, 1_000_000).as_secs_f64(), 4.0);
        assert_close(model.transfer_joules(0, 1_000_000), 2.8);
        // 1,000,000 bytes up = 8 Mbit at 0.5 Mbps = 16 s; 16 × 0.7 = 11.2 J.
        assert_close(model.transfer_joules(1_000_000, 0), 11.2);
    }

    #[test]
    fn wifi_wake_ups_are_nearly_free() {
        let model = RadioModel::wifi();
        // No promotion; tail 0.25 × 0.403 = 0.10075 J.
        assert_close(model.wake_up_joules(), 0.100_75);
        let report = account(Radio::Wifi, &model, &[ping(0.0), ping(60.0), ping(120.0)]);
        assert_eq!(report.wake_ups, 3);
        assert_close(report.promotion_joules, 0.0);
        // 3 × 0.10075 = 0.30225 J, under 0.2 J per wake-up.
        assert_close(report.total_joules(), 0.302_25);
        assert!(report.total_joules() / 3.0 < 0.2);
    }

    #[test]
    fn overlapping_transfers_queue_behind_the_one_in_progress() {
        let model = RadioModel::lte();
        let megabyte_down = |seconds| Transfer {
            at: at(seconds),
            up_bytes: 0,
            down_bytes: 1_000_000,
        };
        let report = account(
            Radio::Lte,
            &model,
            &[megabyte_down(0.0), megabyte_down(0.5)],
        );
        // The first runs 0.26 .. 0.26 + 0.627943 = 0.887943 s; the second comes
        // at 0.5 s, waits, and runs 0.887943 .. 1.515887 s: no promotion, no
        // tail between.
        assert_eq!(report.wake_ups, 1);
        assert_close(report.promotion_joules, 0.3146);
        assert_close(report.tail_joules, 10.706);
        // 2 × 1.169292 J.
        assert_close(
            report.transfer_joules,
            2.0 * model.transfer_joules(0, 1_000_000),
        );
        // 0.26 + 2 × 0.627943 + 10.1 = 11.615887 s.
        assert_close(report.active.as_secs_f64(), 10.36 + 2.0 * 8.0 / 12.74);
    }

    #[test]
    fn unsorted_input_gives_the_same_report_as_sorted() {
        let model = RadioModel::lte();
        let sorted = [
            Transfer {
                at: at(1.0),
                up_bytes: 5_000,
                down_bytes: 0,
            },
            Transfer {
                at: at(4.0),
                up_bytes: 0,
                down_bytes: 40_000,
            },
            Transfer {
                at: at(90.0),
                up_bytes: 300,
                down_bytes: 700,
            },
        ];
        let unsorted = [sorted[2], sorted[0], sorted[1]];
        let expected = account(Radio::Lte, &model, &sorted);
        assert_eq!(account(Radio::Lte, &model, &unsorted), expected);
        // 1 s and 4 s share a wake-up; 90 s is past the 10.1 s tail.
        assert_eq!(expected.wake_ups, 2);
        assert_eq!(expected.transfers, 3);
        // 5,000 + 300 up; 40,000 + 700 down.
        assert_eq!((expected.bytes_up, expected.bytes_down), (5_300, 40_700));
    }

    #[test]
    fn no_transfers_cost_nothing() {
        let report = account(Radio::Lte, &RadioModel::lte(), &[]);
        assert_eq!(report, EnergyReport::new(Radio::Lte));
        assert_close(report.total_joules(), 0.0);
        // No energy at all: the CPU's share is 0, not NaN.
        assert_close(report.cpu_share_pct(), 0.0);
    }

    #[test]
    fn battery_percentage_and_cpu_energy() {
        let mut report = EnergyReport::new(Radio::Lte);
        report.cpu_joules = 374.22;
        // 374.22 / 37,422 × 100 = 1.0 %.
        assert_close(report.battery_pct(), 1.0);

        let slow_core = CpuModel {
            busy_watts: 1.4,
            scale: 2.0,
        };
        // 1.4 W × 2 × 1 s = 2.8 J.
        assert_close(slow_core.joules(Duration::from_secs(1)), 2.8);
        // 1.4 W × 1 × 0.5 s = 0.7 J.
        assert_close(CpuModel::phone().joules(Duration::from_millis(500)), 0.7);

        let mut report = EnergyReport::new(Radio::Wifi);
        report.tail_joules = 2.8;
        report.add_cpu(&slow_core, Duration::from_secs(1));
        // 2.8 J of CPU out of 2.8 + 2.8 = 5.6 J: 50 %.
        assert_close(report.cpu_joules, 2.8);
        assert_close(report.cpu_share_pct(), 50.0);
    }

    #[test]
    fn a_rate_of_zero_saturates_instead_of_panicking() {
        let mut model = RadioModel::lte();
        model.up_mbps = 0.0;
        assert_eq!(model.transfer_time(1, 0), Duration::MAX);
        assert_eq!(model.transfer_time(0, 0), Duration::ZERO);
        let transfers = [
            Transfer {
                at: at(0.0),
                up_bytes: 1,
                down_bytes: 0,
            },
            ping(1.0),
        ];
        let report = account(Radio::Lte, &model, &transfers);
        // The second queues behind the first, which never ends.
        assert_eq!(report.wake_ups, 1);
        assert_eq!(report.active, Duration::MAX);
    }
}
