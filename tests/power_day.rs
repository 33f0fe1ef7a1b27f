//! The day simulator: its energy accounting on a day small enough to compute
//! by hand, and a typical day in every mode losing nothing.

use std::time::Duration;

use mobilesyncdb::power::energy::{CpuModel, Radio, RadioModel};
use mobilesyncdb::power::simulate::{
    ANSWER_OVERHEAD_BYTES, DayPlan, REQUEST_OVERHEAD_BYTES, Strategy, run_day,
};
use mobilesyncdb::power::{NetworkKind, PowerState};

#[tokio::test(start_paused = true)]
async fn a_quiet_day_of_plain_polling_costs_what_the_model_says() {
    // Nothing happens; the phone polls every 7 hours: at 0, 7, 14 and 21 h.
    let plan = DayPlan {
        todos: 10,
        events: Vec::new(),
    };
    let day = run_day(
        &plan,
        Strategy::PlainPolling(Duration::from_secs(7 * 3600)),
        NetworkKind::Metered,
    )
    .await
    .expect("the day plays");
    assert!(day.converged);
    let times: Vec<u64> = day.transfers.iter().map(|t| t.at.as_secs()).collect();
    assert_eq!(
        times,
        [0, 0, 25_200, 25_200, 50_400, 50_400, 75_600, 75_600]
    );
    // Each poll: a request, then its answer at once (an empty batch).
    let up: u64 = day.transfers.iter().map(|t| t.up_bytes).sum();
    let down: u64 = day.transfers.iter().map(|t| t.down_bytes).sum();
    assert_eq!(day.stats.requests, 4);
    assert_eq!(up, day.stats.bytes_sent + 4 * REQUEST_OVERHEAD_BYTES);
    assert_eq!(down, day.stats.bytes_received + 4 * ANSWER_OVERHEAD_BYTES);

    let report = day.energy(Radio::Lte, &CpuModel::phone());
    assert_eq!(report.wake_ups, 4);
    // By hand, on LTE: four wake-ups, each a promotion (0.26 s at 1.21 W)
    // and, after its two transfers back to back, a full tail (10.1 s at
    // 1.06 W); the bytes cost 1.2 W for their time at 5.64 Mbit/s up and
    // 12.74 Mbit/s down, plus 0.43839 J per Mbit up and 0.05197 J per Mbit
    // down.
    let (up_mbit, down_mbit) = (up as f64 * 8.0 / 1e6, down as f64 * 8.0 / 1e6);
    let transfer =
        1.2 * (up_mbit / 5.64 + down_mbit / 12.74) + 0.43839 * up_mbit + 0.05197 * down_mbit;
    let by_hand = 4.0 * (0.26 * 1.21 + 10.1 * 1.06) + transfer;
    // Times are whole nanoseconds in the model: a few nanojoules apart.
    assert!(
        (report.radio_joules() - by_hand).abs() < 1e-6,
        "{} J by the model, {by_hand} J by hand",
        report.radio_joules()
    );
    assert!((RadioModel::lte().wake_up_joules() - 11.0206).abs() < 1e-9);
    // The CPU term is the measured time at 1.4 W.
    let cpu = Duration::from_micros(day.stats.cpu_micros).as_secs_f64() * 1.4;
    assert!((report.cpu_joules - cpu).abs() < 1e-12);
}

#[tokio::test(start_paused = true)]
async fn a_typical_day_loses_nothing_in_any_mode_and_costs_less_as_the_battery_drains() {
    let plan = DayPlan::typical(42);
    let mut wake_ups = Vec::new();
    for strategy in [
        Strategy::PlainPolling(Duration::from_secs(300)),
        Strategy::Mode(PowerState::Normal),
        Strategy::Mode(PowerState::Low),
        Strategy::Mode(PowerState::Critical),
    ] {
        let day = run_day(&plan, strategy, NetworkKind::Metered)
            .await
            .expect("the day plays");
        assert!(day.converged, "{} lost or missed a change", strategy.name());
        let report = day.energy(Radio::Lte, &CpuModel::phone());
        wake_ups.push(report.wake_ups);
        match strategy {
            Strategy::Mode(PowerState::Normal) | Strategy::PlainPolling(_) => {
                assert_eq!(day.queued_at_end, 0, "{}", strategy.name());
                assert_eq!(day.deferred_at_end, 0, "{}", strategy.name());
            }
            // Low and critical hold low-priority records back for a better
            // state; critical also holds back the phone's usage events.
            Strategy::Mode(PowerState::Low) => assert!(day.deferred_at_end > 0),
            Strategy::Mode(_) => {
                assert!(day.deferred_at_end > 0);
                assert!(day.queued_at_end > 0);
            }
        }
    }
    assert!(
        wake_ups.windows(2).all(|pair| pair[0] > pair[1]),
        "wake-ups from plain polling to critical: {wake_ups:?}"
    );
}
