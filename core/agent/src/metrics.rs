//! The agent's Prometheus metrics (`prometheus-client`), served at
//! `/metrics` on its port to any certificate of the cluster CA (the
//! listener refuses others at the handshake): containers started and
//! failed, how long starts take, health check verdicts, image pulls and
//! the heartbeat round trip. One set per process, kept as things happen.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The agent's metrics.
pub struct AgentMetrics {
    registry: Registry,
    /// Containers started (each start and restart).
    pub started: Counter,
    /// Container starts that failed (image, runtime, spec).
    pub failed: Counter,
    /// From the decision to start (image present) to the container running.
    pub start_seconds: Histogram,
    /// Health and readiness verdicts, by check and result.
    pub checks: Family<Labels, Counter>,
    /// Image pulls (or checks of a remote tag), by result.
    pub pulls: Family<Labels, Counter>,
    /// How long pulls took.
    pub pull_seconds: Histogram,
    /// Heartbeats to the servers, round trip.
    pub heartbeat_seconds: Histogram,
}

impl AgentMetrics {
    fn new() -> AgentMetrics {
        let mut r = Registry::with_prefix("berth_agent");
        let m = AgentMetrics {
            registry: Registry::default(),
            started: Counter::default(),
            failed: Counter::default(),
            start_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            checks: Family::default(),
            pulls: Family::default(),
            pull_seconds: Histogram::new(exponential_buckets(0.01, 2.5, 12)),
            heartbeat_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        r.register(
            "containers_started",
            "Containers started",
            m.started.clone(),
        );
        r.register(
            "containers_failed",
            "Container starts that failed",
            m.failed.clone(),
        );
        r.register(
            "container_start_seconds",
            "Time from starting a container to it running",
            m.start_seconds.clone(),
        );
        r.register(
            "health_checks",
            "Check verdicts by check and result",
            m.checks.clone(),
        );
        r.register("image_pulls", "Image pulls by result", m.pulls.clone());
        r.register(
            "image_pull_seconds",
            "Time an image pull took",
            m.pull_seconds.clone(),
        );
        r.register(
            "heartbeat_round_trip_seconds",
            "Heartbeat round trips to the servers",
            m.heartbeat_seconds.clone(),
        );
        AgentMetrics { registry: r, ..m }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            return String::new();
        }
        out
    }

    /// Counts a check's new verdict.
    pub fn check(&self, which: &'static str, passing: bool) {
        let result = if passing { "passing" } else { "failing" };
        self.checks
            .get_or_create(&vec![("check", which), ("result", result)])
            .inc();
    }

    /// Counts a pull and its time.
    pub fn pull(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.pulls.get_or_create(&vec![("result", result)]).inc();
        self.pull_seconds.observe(took.as_secs_f64());
    }
}

/// This process's agent metrics.
pub static METRICS: LazyLock<AgentMetrics> = LazyLock::new(AgentMetrics::new);

/// The route serving them (merged beside the agent's gRPC service).
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                METRICS.render(),
            )
        }),
    )
}
