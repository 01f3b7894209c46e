//! Process metrics in the Prometheus text format (`GET /metrics`). Labels are static strings (route
//! names, method and reason names), so cardinality is bounded by the code, never by requests.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Per-bucket counts, not cumulative: a request increments one counter; `render` sums them.
    /// The last slot counts requests slower than every bound.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    auth_failures: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    rate_limited: AtomicU64,
    credits_charged_micros: AtomicU64,
    credits_topped_up_micros: AtomicU64,
    /// Metered calls whose provider reported more than the reservation (debited the reservation).
    over_reservation: AtomicU64,
    /// Metered calls by how they ended: completed, client_gone, failed, fault.
    gateway_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    in_flight: std::sync::atomic::AtomicI64,
    connections_refused: AtomicU64,
    settlements_unknown: AtomicU64,
}

/// Counts one request in flight for as long as it lives (dropped when its future ends or is
/// dropped, e.g. when the client hangs up).
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Metrics {
    pub fn record_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route, status)).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS.partition_point(|bound| *bound < secs);
        if let Some(bucket) = self.latency_buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A request has started; it counts until the guard is dropped.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// Requests whose handling future is alive right now.
    pub fn requests_in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A connection closed at once because its client address held the most it may.
    pub fn record_connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// x402 settlements whose outcome is unknown and that wait for the operator (SPEC §7).
    pub fn set_settlements_unknown(&self, n: u64) {
        self.settlements_unknown.store(n, Ordering::SeqCst);
    }

    pub fn add_settlement_unknown(&self) {
        self.settlements_unknown.fetch_add(1, Ordering::SeqCst);
    }

    pub fn settlements_unknown(&self) -> u64 {
        self.settlements_unknown.load(Ordering::SeqCst)
    }

    pub fn record_auth_failure(&self, method: &'static str, reason: &'static str) {
        if let Ok(mut map) = self.auth_failures.lock() {
            *map.entry((method, reason)).or_default() += 1;
        }
    }

    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_over_reservation(&self) {
        self.over_reservation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn over_reservation(&self) -> u64 {
        self.over_reservation.load(Ordering::Relaxed)
    }

    /// One metered call of `endpoint` that ended as `end`.
    pub fn record_gateway_call(&self, endpoint: &'static str, end: &'static str) {
        if let Ok(mut calls) = self.gateway_calls.lock() {
            *calls.entry((endpoint, end)).or_default() += 1;
        }
    }

    pub fn record_credits_charged(&self, micros: u64) {
        self.credits_charged_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub fn record_credits_topped_up(&self, micros: i64) {
        self.credits_topped_up_micros
            .fetch_add(u64::try_from(micros).unwrap_or(0), Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP eliza_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE eliza_http_requests_total counter");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "eliza_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP eliza_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(out, "# TYPE eliza_http_request_duration_seconds histogram");
        let mut cumulative = 0u64;
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            cumulative = cumulative.saturating_add(bucket.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "eliza_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "eliza_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "eliza_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "eliza_http_request_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP eliza_auth_failures_total Failed authentications by method and reason."
        );
        let _ = writeln!(out, "# TYPE eliza_auth_failures_total counter");
        if let Ok(map) = self.auth_failures.lock() {
            for ((method, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "eliza_auth_failures_total{{method=\"{method}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP eliza_rate_limited_total Requests refused with 429."
        );
        let _ = writeln!(out, "# TYPE eliza_rate_limited_total counter");
        let _ = writeln!(
            out,
            "eliza_rate_limited_total {}",
            self.rate_limited.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP eliza_credits_charged_micros_total Credits debited, micro-dollars."
        );
        let _ = writeln!(
            out,
            "# HELP eliza_gateway_over_reservation_total Metered calls whose reported usage \
             exceeded their reservation (debited the reservation)."
        );
        let _ = writeln!(out, "# TYPE eliza_gateway_over_reservation_total counter");
        let _ = writeln!(
            out,
            "eliza_gateway_over_reservation_total {}",
            self.over_reservation.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP eliza_gateway_calls_total Metered calls by endpoint and how they ended."
        );
        let _ = writeln!(out, "# TYPE eliza_gateway_calls_total counter");
        if let Ok(calls) = self.gateway_calls.lock() {
            for ((endpoint, end), n) in calls.iter() {
                let _ = writeln!(
                    out,
                    "eliza_gateway_calls_total{{endpoint=\"{endpoint}\",end=\"{end}\"}} {n}"
                );
            }
        }
        let _ = writeln!(out, "# TYPE eliza_credits_charged_micros_total counter");
        let _ = writeln!(
            out,
            "eliza_credits_charged_micros_total {}",
            self.credits_charged_micros.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP eliza_credits_topped_up_micros_total Credits bought with x402, micro-dollars."
        );
        let _ = writeln!(out, "# TYPE eliza_credits_topped_up_micros_total counter");
        let _ = writeln!(
            out,
            "eliza_credits_topped_up_micros_total {}",
            self.credits_topped_up_micros.load(Ordering::Relaxed)
        );
        let gauges = [
            (
                "eliza_http_requests_in_flight",
                "gauge",
                "Requests being handled right now.",
                u64::try_from(self.requests_in_flight()).unwrap_or(0),
            ),
            (
                "eliza_connections_refused_per_address_total",
                "counter",
                "Connections closed at once: their client address held the most it may.",
                self.connections_refused.load(Ordering::Relaxed),
            ),
            (
                "eliza_x402_settlements_unknown",
                "gauge",
                "x402 settlements with an unknown outcome, waiting for `eliza-cloud payments resolve`.",
                self.settlements_unknown(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.record_request("healthz", 200, Duration::from_micros(300));
        m.record_request("healthz", 200, Duration::from_millis(30));
        m.record_request("healthz", 200, Duration::from_millis(500));
        m.record_request("healthz", 200, Duration::from_secs(9));
        m.record_auth_failure("api_key", "unknown_key");
        m.record_rate_limited();
        let text = m.render();
        assert!(text.contains("eliza_http_requests_total{route=\"healthz\",status=\"200\"} 4"));
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"0.05\"} 2"));
        // A bound is inclusive: 0.5 s lands in le="0.5"; 9 s only in +Inf.
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"0.25\"} 2"));
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"0.5\"} 3"));
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"5\"} 3"));
        assert!(text.contains("eliza_http_request_duration_seconds_bucket{le=\"+Inf\"} 4"));
        assert!(text.contains("eliza_http_request_duration_seconds_count 4"));
        assert!(
            text.contains("eliza_auth_failures_total{method=\"api_key\",reason=\"unknown_key\"} 1")
        );
        assert!(text.contains("eliza_rate_limited_total 1"));
    }
}
