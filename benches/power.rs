//! The energy a day of syncing costs a phone, by power mode and radio.
//!
//! Plays `DayPlan::typical` against an in-process server under paused time
//! (`mobilesyncdb::power::simulate`), once per strategy and network (LTE and
//! 3G metered, WiFi unmetered), and accounts the phone's radio transfers and
//! measured CPU time with the energy model of `docs/POWER.md`. Prints:
//!
//! - `energy_pct_day_<strategy>_<radio>`: percent of a 2,700 mAh battery, for
//!   `charging`, `balanced` (normal), `low`, `critical` and `naive_poll` (a
//!   plain client polling every 5 minutes, no batching or compression);
//! - `energy_j_day_<strategy>_<radio>` and `wake_ups_day_<strategy>_<radio>`;
//! - `cpu_overhead_pct_balanced`: the CPU energy (decoding, merging,
//!   compressing) as a share of the sync energy, balanced mode on LTE.
//!
//! Targets: balanced LTE ≤ 2 %, low LTE ≤ 1 %, both at most a third of naive
//! polling. `cargo bench --bench power -- --write-docs` also writes the chart
//! (`docs/power/energy-day.svg`) and the results table of `docs/POWER.md`.
//! `MSDB_POWER_CPU_SCALE` (default 2) multiplies the measured CPU time: a
//! phone's core is taken as half as fast as the one measuring.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{env_number, figure};
use mobilesyncdb::power::chart::BarChart;
use mobilesyncdb::power::energy::{CpuModel, EnergyReport, Radio};
use mobilesyncdb::power::simulate::{DayPlan, DayResult, Strategy, run_day};
use mobilesyncdb::power::{NetworkKind, PowerState};

const STRATEGIES: [Strategy; 5] = [
    Strategy::Mode(PowerState::Charging),
    Strategy::Mode(PowerState::Normal),
    Strategy::Mode(PowerState::Low),
    Strategy::Mode(PowerState::Critical),
    Strategy::PlainPolling(Duration::from_secs(300)),
];

fn network_of(radio: Radio) -> NetworkKind {
    match radio {
        Radio::Wifi => NetworkKind::Unmetered,
        Radio::Lte | Radio::ThreeG => NetworkKind::Metered,
    }
}

struct Row {
    strategy: Strategy,
    radio: Radio,
    report: EnergyReport,
    day: DayResult,
}

fn main() {
    let write_docs = std::env::args().any(|arg| arg == "--write-docs");
    let seed = env_number("MSDB_BENCH_SEED", 42);
    let cpu = CpuModel {
        scale: env_number("MSDB_POWER_CPU_SCALE", 2) as f64,
        ..CpuModel::phone()
    };
    let plan = DayPlan::typical(seed);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let started = std::time::Instant::now();
    let mut rows = Vec::new();
    for strategy in STRATEGIES {
        for network in [NetworkKind::Metered, NetworkKind::Unmetered] {
            let day = runtime
                .block_on(run_day(&plan, strategy, network))
                .expect("the day plays through");
            assert!(
                day.converged,
                "{} on a {network} network lost or missed a change",
                strategy.name()
            );
            for radio in Radio::ALL
                .into_iter()
                .filter(|radio| network_of(*radio) == network)
            {
                rows.push(Row {
                    strategy,
                    radio,
                    report: day.energy(radio, &cpu),
                    day: day.clone(),
                });
            }
        }
    }
    let wall = started.elapsed();
    for row in &rows {
        let name = format!(
            "{}_{}",
            row.strategy.name(),
            row.radio.name().replace('3', "three")
        );
        figure(
            &format!("energy_pct_day_{name}"),
            row.report.battery_pct(),
            "%",
        );
        figure(
            &format!("energy_j_day_{name}"),
            row.report.total_joules(),
            "J",
        );
        figure(
            &format!("wake_ups_day_{name}"),
            f64::from(row.report.wake_ups),
            "",
        );
    }
    let find = |strategy: Strategy, radio: Radio| {
        rows.iter()
            .find(|row| row.strategy == strategy && row.radio == radio)
            .expect("a row")
    };
    let balanced = find(Strategy::Mode(PowerState::Normal), Radio::Lte);
    // Far below the two decimals of `figure`: printed with four.
    println!(
        "figure cpu_overhead_pct_balanced = {:.4} %",
        balanced.report.cpu_share_pct()
    );
    figure(
        "cpu_ms_day_balanced",
        balanced.day.stats.cpu_micros as f64 / 1e3,
        "ms",
    );
    let naive = find(STRATEGIES[4], Radio::Lte).report.battery_pct();
    let low = find(Strategy::Mode(PowerState::Low), Radio::Lte)
        .report
        .battery_pct();
    figure(
        "balanced_over_naive_lte",
        balanced.report.battery_pct() / naive,
        "×",
    );
    figure("low_over_naive_lte", low / naive, "×");
    println!(
        "# {} simulated days in {:.1} s of wall time (seed {seed}, CPU scale {})",
        STRATEGIES.len() * 2,
        wall.as_secs_f64(),
        cpu.scale
    );
    let table = table(&rows);
    println!("{table}");
    if write_docs {
        write_docs_files(&rows, &table);
    }
}

/// The results as a Markdown table, a row per strategy and radio.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| strategy | radio | % battery/day | J/day | wake-ups | requests | KB up | KB down | radio J | CPU J | deferred at 24:00 | queued at 24:00 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let report = &row.report;
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.3} | {} | {} |",
            row.strategy.name(),
            row.radio,
            report.battery_pct(),
            report.total_joules(),
            report.wake_ups,
            row.day.stats.requests,
            report.bytes_up as f64 / 1e3,
            report.bytes_down as f64 / 1e3,
            report.radio_joules(),
            report.cpu_joules,
            row.day.deferred_at_end,
            row.day.queued_at_end,
        );
    }
    out
}

fn write_docs_files(rows: &[Row], table: &str) {
    let groups: Vec<String> = STRATEGIES.iter().map(|strategy| strategy.name()).collect();
    let series = Radio::ALL
        .iter()
        .map(|radio| {
            let values = STRATEGIES
                .iter()
                .map(|strategy| {
                    rows.iter()
                        .find(|row| row.strategy == *strategy && row.radio == *radio)
                        .map_or(f64::NAN, |row| row.report.battery_pct())
                })
                .collect();
            let name = match radio {
                Radio::Lte => "LTE",
                Radio::ThreeG => "3G",
                Radio::Wifi => "WiFi",
            };
            (name.to_owned(), values)
        })
        .collect();
    let chart = BarChart {
        title: "Sync energy for a typical day, by power mode and radio".to_owned(),
        unit: "% of a 2,700 mAh battery per day".to_owned(),
        groups,
        series,
        reference_lines: vec![
            ("balanced target ≤ 2 %".to_owned(), 2.0),
            ("low target ≤ 1 %".to_owned(), 1.0),
        ],
    };
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(docs.join("power")).expect("docs/power");
    std::fs::write(docs.join("power/energy-day.svg"), chart.to_svg()).expect("the chart");
    let path = docs.join("POWER.md");
    let text = std::fs::read_to_string(&path).expect("docs/POWER.md");
    let (start, end) = ("<!-- results:start -->", "<!-- results:end -->");
    let (Some(from), Some(to)) = (text.find(start), text.find(end)) else {
        panic!("docs/POWER.md has no {start} … {end} section");
    };
    let updated = format!("{}{start}\n{table}{}", &text[..from], &text[to..]);
    std::fs::write(&path, updated).expect("docs/POWER.md");
    println!("# wrote docs/power/energy-day.svg and the table of docs/POWER.md");
}
