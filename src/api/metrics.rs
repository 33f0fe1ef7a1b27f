//! Prometheus metrics for the HTTP server, in the text exposition format 0.0.4.
//!
//! - [`Metrics`]: the counters and latency histograms that the request path
//!   records into, rendered by [`Metrics::render`] for a scrape.
//! - [`Gauge`]: a figure the server reads from the engine, sync or compression
//!   at scrape time and hands to `render`, so this module knows none of them.
//!
//! The format is written by hand: it is a few lines of text per sample, and
//! the families here are all the server needs.
//!
//! Label sets are bounded so memory is too: routes and auth failure reasons are
//! `&'static str` names chosen by the server, status codes are the server's,
//! and methods outside the standard set are counted as `OTHER`.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds; `+Inf` follows.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const REQUESTS: &str = "msdb_http_requests_total";
const DURATION: &str = "msdb_http_request_duration_seconds";
const DURATION_BUCKET: &str = "msdb_http_request_duration_seconds_bucket";
const DURATION_SUM: &str = "msdb_http_request_duration_seconds_sum";
const DURATION_COUNT: &str = "msdb_http_request_duration_seconds_count";
const REQUEST_BYTES: &str = "msdb_http_request_bytes_total";
const RESPONSE_BYTES: &str = "msdb_http_response_bytes_total";
const RATE_LIMITED: &str = "msdb_http_rate_limited_total";
const AUTH_FAILURES: &str = "msdb_auth_failures_total";
const LONG_POLLS: &str = "msdb_long_polls_total";
const STREAMS_OPEN: &str = "msdb_change_streams_open";

/// Names that a [`Gauge`] must not reuse: a family may appear only once.
const BUILT_IN_NAMES: [&str; 11] = [
    REQUESTS,
    DURATION,
    DURATION_BUCKET,
    DURATION_SUM,
    DURATION_COUNT,
    REQUEST_BYTES,
    RESPONSE_BYTES,
    RATE_LIMITED,
    AUTH_FAILURES,
    LONG_POLLS,
    STREAMS_OPEN,
];

/// Whether a [`Gauge`] sample is a level or a running total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GaugeKind {
    Gauge,
    Counter,
}

/// A sample supplied at render time. Samples sharing a name form one family
/// and take its `help` and `kind` from the first of them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gauge {
    /// A metric name, `msdb_` prefixed, unlike any built-in family's.
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: GaugeKind,
    /// Label names and values; values are escaped when rendered.
    pub(crate) labels: Vec<(&'static str, String)>,
    pub(crate) value: f64,
}

/// The server's request metrics, shared between request handlers.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// One std mutex for the per-request figures: a request holds it for two
    /// lookups in small maps, never across `.await`; render copies the maps
    /// and formats after releasing it.
    registry: Mutex<Registry>,
    rate_limited: AtomicU64,
    /// Pulls that asked to wait for changes (`wait_ms`).
    long_polls: AtomicU64,
    /// Change streams open now.
    streams_open: AtomicU64,
}

#[derive(Debug, Default, Clone)]
struct Registry {
    requests: BTreeMap<RequestLabels, u64>,
    routes: BTreeMap<&'static str, RouteStats>,
    auth_failures: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Default, Clone)]
struct RouteStats {
    /// Requests per latency bucket, not cumulative; the `+Inf` bucket is `count`.
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    duration_sum: Duration,
    bytes_in: u64,
    bytes_out: u64,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Counts one answered request on `route` (a fixed name such as
    /// `"records"`), with its latency and body sizes.
    pub(crate) fn record_request(
        &self,
        route: &'static str,
        method: &str,
        status: u16,
        elapsed: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status,
        };
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < elapsed.as_secs_f64());
        let mut registry = self.lock();
        *registry.requests.entry(labels).or_default() += 1;
        let stats = registry.routes.entry(route).or_default();
        stats.record(bucket, elapsed, bytes_in, bytes_out);
    }

    pub(crate) fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one long-poll pull.
    pub(crate) fn record_long_poll(&self) {
        self.long_polls.fetch_add(1, Ordering::Relaxed);
    }

    /// A change stream opened; [`Metrics::stream_closed`] once it ends.
    pub(crate) fn stream_opened(&self) {
        self.streams_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        // Paired with `stream_opened`, so it never goes below zero; saturate anyway.
        let _ = self
            .streams_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                Some(open.saturating_sub(1))
            });
    }

    /// Counts one failed authentication; `reason` is a fixed name such as
    /// `"expired_token"`.
    pub(crate) fn record_auth_failure(&self, reason: &'static str) {
        *self.lock().auth_failures.entry(reason).or_default() += 1;
    }

    /// The exposition text for a scrape: the built-in families, then
    /// `gauges` grouped by name in name order.
    pub(crate) fn render(&self, gauges: &[Gauge]) -> String {
        let registry = self.lock().clone();
        let mut exposition = Exposition::default();
        registry.write_requests(&mut exposition);
        registry.write_durations(&mut exposition);
        registry.write_bytes(&mut exposition);
        let help = "HTTP requests refused by the rate limiter.";
        exposition.family(RATE_LIMITED, help, "counter");
        exposition.sample(RATE_LIMITED, &[], self.rate_limited.load(Ordering::Relaxed));
        registry.write_auth_failures(&mut exposition);
        let help = "Sync pulls that asked to wait for changes (long polls).";
        exposition.family(LONG_POLLS, help, "counter");
        exposition.sample(LONG_POLLS, &[], self.long_polls.load(Ordering::Relaxed));
        let help = "Change streams (server-sent events) open now.";
        exposition.family(STREAMS_OPEN, help, "gauge");
        exposition.sample(STREAMS_OPEN, &[], self.streams_open.load(Ordering::Relaxed));
        write_gauges(&mut exposition, gauges);
        exposition.text
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every update leaves the maps consistent, so a panic elsewhere while
        // holding the lock cannot leave them half written.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registry {
    fn write_requests(&self, exposition: &mut Exposition) {
        let help = "HTTP requests answered, by route, method and status code.";
        exposition.family(REQUESTS, help, "counter");
        for (labels, count) in &self.requests {
            let status = labels.status.to_string();
            let pairs = [
                ("route", labels.route),
                ("method", labels.method),
                ("status", &status),
            ];
            exposition.sample(REQUESTS, &pairs, count);
        }
    }

    fn write_durations(&self, exposition: &mut Exposition) {
        exposition.family(
            DURATION,
            "HTTP request latency in seconds, by route.",
            "histogram",
        );
        for (route, stats) in &self.routes {
            stats.write_histogram(exposition, route);
        }
    }

    fn write_bytes(&self, exposition: &mut Exposition) {
        let help = "HTTP request body bytes received, by route.";
        exposition.family(REQUEST_BYTES, help, "counter");
        for (route, stats) in &self.routes {
            exposition.sample(REQUEST_BYTES, &[("route", route)], stats.bytes_in);
        }
        let help = "HTTP response body bytes sent, by route.";
        exposition.family(RESPONSE_BYTES, help, "counter");
        for (route, stats) in &self.routes {
            exposition.sample(RESPONSE_BYTES, &[("route", route)], stats.bytes_out);
        }
    }

    fn write_auth_failures(&self, exposition: &mut Exposition) {
        let help = "Requests refused because authentication failed, by reason.";
        exposition.family(AUTH_FAILURES, help, "counter");
        for (reason, count) in &self.auth_failures {
            exposition.sample(AUTH_FAILURES, &[("reason", reason)], count);
        }
    }
}

impl RouteStats {
    fn record(&mut self, bucket: usize, elapsed: Duration, bytes_in: u64, bytes_out: u64) {
        if let Some(slot) = self.buckets.get_mut(bucket) {
            *slot += 1;
        }
        self.count += 1;
        self.duration_sum = self.duration_sum.saturating_add(elapsed);
        self.bytes_in = self.bytes_in.saturating_add(bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(bytes_out);
    }

    fn write_histogram(&self, exposition: &mut Exposition, route: &str) {
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(self.buckets) {
            cumulative += count;
            let le = SampleValue(*bound).to_string();
            exposition.sample(
                DURATION_BUCKET,
                &[("route", route), ("le", &le)],
                cumulative,
            );
        }
        exposition.sample(
            DURATION_BUCKET,
            &[("route", route), ("le", "+Inf")],
            self.count,
        );
        let sum = SampleValue(self.duration_sum.as_secs_f64());
        exposition.sample(DURATION_SUM, &[("route", route)], sum);
        exposition.sample(DURATION_COUNT, &[("route", route)], self.count);
    }
}

impl GaugeKind {
    fn type_name(self) -> &'static str {
        match self {
            GaugeKind::Gauge => "gauge",
            GaugeKind::Counter => "counter",
        }
    }
}

fn write_gauges(exposition: &mut Exposition, gauges: &[Gauge]) {
    let mut families: BTreeMap<&str, Vec<&Gauge>> = BTreeMap::new();
    for gauge in gauges {
        families.entry(gauge.name).or_default().push(gauge);
    }
    for (name, samples) in families {
        debug_assert!(
            !BUILT_IN_NAMES.contains(&name),
            "gauge {name} reuses a built-in name"
        );
        let first = samples[0];
        exposition.family(name, first.help, first.kind.type_name());
        for gauge in samples {
            let labels: Vec<(&str, &str)> = gauge
                .labels
                .iter()
                .map(|(label, value)| (*label, value.as_str()))
                .collect();
            exposition.sample(name, &labels, SampleValue(gauge.value));
        }
    }
}

/// The method label: the standard methods as sent, anything else `OTHER`,
/// because a client choosing methods would otherwise grow the counters.
fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .into_iter()
        .find(|standard| *standard == method)
        .unwrap_or("OTHER")
}

/// The exposition text being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        debug_assert!(is_valid_name(name, true), "invalid metric name {name:?}");
        self.text.push_str("# HELP ");
        self.text.push_str(name);
        self.text.push(' ');
        push_escaped(&mut self.text, help, false);
        self.text.push_str("\n# TYPE ");
        self.text.push_str(name);
        self.text.push(' ');
        self.text.push_str(kind);
        self.text.push('\n');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.push_labels(labels);
        }
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, " {value}");
    }

    fn push_labels(&mut self, labels: &[(&str, &str)]) {
        self.text.push('{');
        for (index, (label, value)) in labels.iter().enumerate() {
            debug_assert!(is_valid_name(label, false), "invalid label name {label:?}");
            if index > 0 {
                self.text.push(',');
            }
            self.text.push_str(label);
            self.text.push_str("=\"");
            push_escaped(&mut self.text, value, true);
            self.text.push('"');
        }
        self.text.push('}');
    }
}

/// Escapes backslashes and newlines, and double quotes in label values, as
/// the exposition format requires of label values and HELP text.
fn push_escaped(text: &mut String, raw: &str, escape_quotes: bool) {
    for character in raw.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '"' if escape_quotes => text.push_str("\\\""),
            other => text.push(other),
        }
    }
}

/// Metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`; label names the same
/// without colons.
fn is_valid_name(name: &str, colons_allowed: bool) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colons_allowed && c == ':');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|first| !first.is_ascii_digit());
    starts_well && name.chars().all(allowed)
}

/// A float in the spelling Prometheus parses: `+Inf`, `-Inf` and `NaN` for the
/// special values, whole numbers without a fraction, others in shortest form.
struct SampleValue(f64);

impl Display for SampleValue {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Beyond 2^53 not every whole number is a float; exponent form is safer.
        const EXACT_INTEGERS: f64 = 9_007_199_254_740_992.0;
        let value = self.0;
        match value {
            _ if value.is_nan() => formatter.write_str("NaN"),
            f64::INFINITY => formatter.write_str("+Inf"),
            f64::NEG_INFINITY => formatter.write_str("-Inf"),
            _ if value.fract() == 0.0 && value.abs() < EXACT_INTEGERS => {
                write!(formatter, "{value}")
            }
            _ => write!(formatter, "{value:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    impl Sample {
        fn label(&self, name: &str) -> Option<&str> {
            let mut matching = self.labels.iter().filter(|(label, _)| label == name);
            matching.next().map(|(_, value)| value.as_str())
        }
    }

    /// Parses exposition text, asserting the format's rules on the way:
    /// HELP then TYPE once per family, its samples contiguous after them.
    fn parse_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "text must end with a newline");
        let mut types: HashMap<String, String> = HashMap::new();
        let mut current_family = String::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!types.contains_key(&name), "family {name} appears twice");
                current_family = name;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(name, current_family, "TYPE without HELP just before it");
                let known = ["counter", "gauge", "histogram"];
                assert!(known.contains(&kind), "unknown type {kind}");
                assert!(types.insert(name.to_string(), kind.to_string()).is_none());
            } else {
                let sample = parse_sample(line);
                assert_eq!(
                    family_of(&sample.name, &types),
                    current_family,
                    "line {line}"
                );
                samples.push(sample);
            }
        }
        samples
    }

    fn family_of(name: &str, types: &HashMap<String, String>) -> String {
        if types.contains_key(name) {
            return name.to_string();
        }
        let suffixes = ["_bucket", "_sum", "_count"];
        let base = suffixes.iter().find_map(|suffix| name.strip_suffix(suffix));
        let base = base.unwrap_or_else(|| panic!("sample {name} without TYPE"));
        assert_eq!(
            types.get(base).map(String::as_str),
            Some("histogram"),
            "sample {name}"
        );
        base.to_string()
    }

    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = &line[..name_end];
        assert!(is_valid_name(name, true), "bad metric name in {line:?}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            rest = parse_labels(after_brace, &mut labels);
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        Sample {
            name: name.to_string(),
            labels,
            value,
        }
    }

    /// Parses `label="value",...}` and returns what follows the brace.
    fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> &'a str {
        loop {
            let (label, after) = rest.split_once("=\"").expect("label without =\"");
            assert!(is_valid_name(label, false), "bad label name {label:?}");
            let mut value = String::new();
            let mut characters = after.char_indices();
            let end = loop {
                match characters.next().expect("unterminated label value") {
                    (index, '"') => break index,
                    (_, '\\') => match characters.next().expect("dangling escape").1 {
                        'n' => value.push('\n'),
                        escaped @ ('\\' | '"') => value.push(escaped),
                        other => panic!("bad escape \\{other}"),
                    },
                    (_, '\n') => panic!("raw newline in label value"),
                    (_, other) => value.push(other),
                }
            };
            labels.push((label.to_string(), value));
            rest = &after[end + 1..];
            match rest.as_bytes().first() {
                Some(b',') => rest = &rest[1..],
                Some(b'}') => return &rest[1..],
                _ => panic!("bad label list"),
            }
        }
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        let matches = |sample: &&Sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(label, value)| sample.label(label) == Some(value))
        };
        samples
            .iter()
            .find(matches)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    fn gauge(name: &'static str, labels: &[(&'static str, &str)], value: f64) -> Gauge {
        let labels = labels
            .iter()
            .map(|(label, value)| (*label, value.to_string()))
            .collect();
        Gauge {
            name,
            help: "A test figure.",
            kind: GaugeKind::Gauge,
            labels,
            value,
        }
    }

    fn busy_metrics() -> Metrics {
        let metrics = Metrics::new();
        let millis = Duration::from_millis;
        metrics.record_request("records", "GET", 200, millis(3), 0, 512);
        metrics.record_request("records", "GET", 200, millis(7), 0, 256);
        metrics.record_request("records", "PUT", 409, millis(12), 100, 40);
        metrics.record_request("sync_pull", "POST", 200, millis(300), 20, 4096);
        metrics.record_rate_limited();
        metrics.record_long_poll();
        metrics.stream_opened();
        metrics.stream_opened();
        metrics.stream_closed();
        metrics.record_auth_failure("expired_token");
        metrics.record_auth_failure("expired_token");
        metrics.record_auth_failure("bad_signature");
        metrics
    }

    #[test]
    fn metrics_are_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn render_follows_the_exposition_format() {
        let mut counter = gauge("msdb_sync_batches_total", &[], 7.0);
        counter.kind = GaugeKind::Counter;
        let gauges = [
            gauge("msdb_engine_records", &[("table", "notes")], 10.0),
            counter,
            gauge("msdb_engine_records", &[("table", "tasks")], 3.0),
        ];
        let text = busy_metrics().render(&gauges);
        let samples = parse_exposition(&text);
        let get = |name, labels: &[(&str, &str)]| find(&samples, name, labels).value;
        let records_get = [("route", "records"), ("method", "GET"), ("status", "200")];
        assert_eq!(get(REQUESTS, &records_get), 2.0);
        assert_eq!(get(REQUESTS, &[("method", "PUT"), ("status", "409")]), 1.0);
        assert_eq!(get(REQUEST_BYTES, &[("route", "records")]), 100.0);
        assert_eq!(get(RESPONSE_BYTES, &[("route", "sync_pull")]), 4096.0);
        assert_eq!(get(RATE_LIMITED, &[]), 1.0);
        assert_eq!(get(LONG_POLLS, &[]), 1.0);
        assert_eq!(get(STREAMS_OPEN, &[]), 1.0);
        assert_eq!(get(AUTH_FAILURES, &[("reason", "expired_token")]), 2.0);
        assert_eq!(get("msdb_engine_records", &[("table", "tasks")]), 3.0);
        assert_eq!(get("msdb_sync_batches_total", &[]), 7.0);
        assert!(text.contains("# TYPE msdb_sync_batches_total counter\n"));
    }

    #[test]
    fn empty_metrics_render_valid_text() {
        let samples = parse_exposition(&Metrics::new().render(&[]));
        let zero = |name: &str| Sample {
            name: name.into(),
            labels: vec![],
            value: 0.0,
        };
        assert_eq!(
            samples,
            [zero(RATE_LIMITED), zero(LONG_POLLS), zero(STREAMS_OPEN)]
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches_inf() {
        let samples = parse_exposition(&busy_metrics().render(&[]));
        let route = [("route", "records")];
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|sample| {
                sample.name == DURATION_BUCKET && sample.label("route") == Some("records")
            })
            .collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(
            buckets
                .windows(2)
                .all(|pair| pair[0].value <= pair[1].value)
        );
        let inf = buckets.last().unwrap();
        assert_eq!(inf.label("le"), Some("+Inf"));
        assert_eq!(find(&samples, DURATION_COUNT, &route).value, inf.value);
        assert_eq!(find(&samples, DURATION_COUNT, &route).value, 3.0);
        let le = |bound| find(&samples, DURATION_BUCKET, &[route[0], ("le", bound)]).value;
        assert_eq!(
            (le("0.0025"), le("0.005"), le("0.01"), le("0.025")),
            (0.0, 1.0, 2.0, 3.0)
        );
        let sum = find(&samples, DURATION_SUM, &route).value;
        assert!((sum - 0.022).abs() < 1e-9, "sum {sum}");
    }

    #[test]
    fn bucket_bounds_are_inclusive_and_slow_requests_reach_only_inf() {
        let metrics = Metrics::new();
        metrics.record_request("records", "GET", 200, Duration::from_millis(5), 0, 0);
        metrics.record_request("records", "GET", 200, Duration::from_secs(30), 0, 0);
        let samples = parse_exposition(&metrics.render(&[]));
        let le = |bound| find(&samples, DURATION_BUCKET, &[("le", bound)]).value;
        assert_eq!(
            (le("0.0025"), le("0.005"), le("10"), le("+Inf")),
            (0.0, 1.0, 1.0, 2.0)
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut odd = gauge("msdb_odd", &[("path", "a\\b\"c\nd")], 1.0);
        odd.help = "first line\nsecond \\ line";
        let text = Metrics::new().render(&[odd]);
        assert!(text.contains(r#"msdb_odd{path="a\\b\"c\nd"} 1"#), "{text}");
        assert!(
            text.contains(r"# HELP msdb_odd first line\nsecond \\ line"),
            "{text}"
        );
        let samples = parse_exposition(&text);
        assert_eq!(
            find(&samples, "msdb_odd", &[]).label("path"),
            Some("a\\b\"c\nd")
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let metrics = Metrics::new();
        for method in ["BREW", "PROPFIND", "get"] {
            metrics.record_request("records", method, 405, Duration::ZERO, 0, 0);
        }
        let samples = parse_exposition(&metrics.render(&[]));
        let requests: Vec<&Sample> = samples
            .iter()
            .filter(|sample| sample.name == REQUESTS)
            .collect();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            (requests[0].label("method"), requests[0].value),
            (Some("OTHER"), 3.0)
        );
    }

    #[test]
    fn special_and_whole_floats_are_spelled_for_prometheus() {
        let spell = |value: f64| SampleValue(value).to_string();
        assert_eq!(spell(f64::NAN), "NaN");
        assert_eq!(spell(f64::INFINITY), "+Inf");
        assert_eq!(spell(f64::NEG_INFINITY), "-Inf");
        assert_eq!(spell(3.0), "3");
        assert_eq!(spell(0.0025), "0.0025");
        assert_eq!(spell(1e300), "1e300");
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let metrics = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        metrics.record_request("records", "GET", 200, Duration::ZERO, 1, 2);
                    }
                });
            }
        });
        let samples = parse_exposition(&metrics.render(&[]));
        assert_eq!(find(&samples, REQUESTS, &[]).value, 4000.0);
        assert_eq!(find(&samples, RESPONSE_BYTES, &[]).value, 8000.0);
    }

    #[test]
    fn name_validation_follows_the_format() {
        assert!(is_valid_name("msdb_http_requests_total", true));
        assert!(is_valid_name("job:rate5m", true));
        assert!(!is_valid_name("job:rate5m", false));
        assert!(!is_valid_name("5xx", false));
        assert!(!is_valid_name("", true));
        assert!(!is_valid_name("has-dash", true));
    }
}
