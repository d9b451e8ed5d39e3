//! `run --metrics-addr`: the run's live counters and latency at `GET /metrics` in the OpenMetrics
//! text format (the `prometheus-client` crate), for Prometheus to scrape during a soak or while
//! shards run on Kubernetes. The progress tick copies what is needed from the metrics into a
//! [`Snapshot`]; a scrape encodes the latest one, so a scrape never waits on the run and the run
//! never waits on a scrape. Reads metrics; never changes them.
//!
//! Exported: `loadtest_requests_total{class,outcome}` (answered requests by their DPS outcome),
//! `loadtest_expectations_total{class,result="met"|"unmet"}`, `loadtest_ended_total{end=
//! "answered"|"transport"|"timed_out"}`, `loadtest_errors_total{source}`,
//! `loadtest_throttled_total` (429 answers), `loadtest_latency_seconds` (from the intended start;
//! a histogram whose buckets are exact counts from the run's HdrHistogram) and
//! `loadtest_schedule_lag_seconds{quantile="0.99"}`, `loadtest_in_flight`, plus `loadtest_run_info{scenario,mode,
//! run_id,shard}`. At the end of a run the counters equal `summary.json`'s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::Metrics;

/// Latency buckets (seconds): sub-millisecond webhooks to DPS's multi-second polls.
const BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

/// What a scrape shows: the run's state at the last progress tick.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    requests: Vec<(Labels, u64)>,
    expectations: Vec<(Labels, u64)>,
    ended: [u64; 3],
    errors: Vec<(Labels, u64)>,
    throttled: u64,
    /// (upper bound, count in that bucket alone), then the +Inf bucket's count.
    buckets: Vec<(f64, u64)>,
    sum_s: f64,
    count: u64,
    lag_p99_s: f64,
    in_flight: u64,
}

#[derive(Debug)]
struct Live {
    info: Labels,
    snapshot: Mutex<Snapshot>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut family = |name: &str, help: &str, rows: &[(Labels, u64)]| {
            counters(&mut encoder, name, help, rows)
        };
        family(
            "loadtest_requests",
            "Answered requests by class and DPS outcome (status, or failed:<errorCode>).",
            &s.requests,
        )?;
        family(
            "loadtest_expectations",
            "Requests whose outcome met or did not meet their class's expectation.",
            &s.expectations,
        )?;
        let ended: Vec<(Labels, u64)> = ["answered", "transport", "timed_out"]
            .iter()
            .zip(s.ended)
            .map(|(e, v)| (vec![("end", (*e).to_owned())], v))
            .collect();
        family(
            "loadtest_ended",
            "Requests ended: answered, transport error, timed out.",
            &ended,
        )?;
        family(
            "loadtest_errors",
            "Requests without an answer, by where the failure came from.",
            &s.errors,
        )?;
        family(
            "loadtest_throttled",
            "429 answers (webhook in webhook mode, DPS in device modes).",
            &[(Vec::new(), s.throttled)],
        )?;
        gauge(
            &mut encoder,
            "loadtest_in_flight",
            "Requests sent and not yet ended (open loop: bounded by max_in_flight).",
            s.in_flight as f64,
        )?;
        let d = encoder.encode_descriptor(
            "loadtest_latency_seconds",
            "Latency from the intended start (wrk2's method), answered or not.",
            None,
            MetricType::Histogram,
        )?;
        let mut m = d;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            s.sum_s, s.count, &s.buckets, None,
        )?;
        let d = encoder.encode_descriptor(
            "loadtest_schedule_lag_seconds",
            "How late requests were sent after their intended start (99th percentile).",
            None,
            MetricType::Gauge,
        )?;
        let mut d = d;
        ConstGauge::new(s.lag_p99_s)
            .encode(d.encode_family(&vec![("quantile", "0.99".to_owned())])?)?;
        let d = encoder.encode_descriptor(
            "loadtest_run",
            "The run: scenario, mode, run id, shard.",
            None,
            MetricType::Info,
        )?;
        let mut d = d;
        d.encode_info(&self.info)?;
        Ok(())
    }
}

impl Snapshot {
    fn of(m: &Metrics, class_names: &[String]) -> Self {
        let mut s = Snapshot::default();
        for (i, c) in m.classes.iter().enumerate() {
            let class = class_names.get(i).cloned().unwrap_or_default();
            for (outcome, n) in &c.outcomes {
                s.requests.push((
                    vec![("class", class.clone()), ("outcome", outcome.to_string())],
                    *n,
                ));
            }
            s.expectations.push((
                vec![("class", class.clone()), ("result", "met".into())],
                c.passed,
            ));
            s.expectations
                .push((vec![("class", class), ("result", "unmet".into())], c.failed));
        }
        s.ended = [m.completed, m.failed, m.timed_out];
        let mut by_source = std::collections::BTreeMap::<&str, u64>::new();
        for ((source, _), n) in &m.errors {
            *by_source.entry(source.as_str()).or_default() += n;
        }
        s.errors = by_source
            .into_iter()
            .map(|(k, v)| (vec![("source", k.to_owned())], v))
            .collect();
        s.throttled = match &m.phases {
            Some(p) => p.throttled,
            None => m
                .intervals
                .as_ref()
                .map_or(0, |l| l.timeline.iter().map(|r| r.throttled).sum()),
        };
        let h = &m.overall.latency;
        let mut below = 0;
        for b in BUCKETS {
            let upto = h.count_between(0, (b * 1e6) as u64);
            s.buckets.push((b, upto - below));
            below = upto;
        }
        s.buckets.push((f64::INFINITY, h.len() - below));
        s.count = h.len();
        s.sum_s = h.mean() * h.len() as f64 / 1e6;
        s.lag_p99_s = m.overall.lag.value_at_quantile(0.99) as f64 / 1e6;
        s
    }
}

/// A running `/metrics` endpoint.
#[derive(Debug)]
pub(crate) struct Exporter {
    live: Arc<Live>,
    classes: Vec<String>,
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Binds `addr` and serves `GET /metrics` (anything else: 404) until stopped. `info` are the
    /// run's labels; `classes` name the metrics' classes in scenario order.
    pub(crate) async fn start(
        addr: SocketAddr,
        info: Labels,
        classes: Vec<String>,
    ) -> std::io::Result<Self> {
        let live = Arc::new(Live {
            info,
            snapshot: Mutex::new(Snapshot::default()),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(live.clone()));
        let (addr, task) = serve(addr, registry)?;
        Ok(Self {
            live,
            classes,
            addr,
            task,
        })
    }

    /// Copies what a scrape shows from `m`; `in_flight` requests are sent and not ended.
    pub(crate) fn update(&self, m: &Metrics, in_flight: u64) {
        let mut s = Snapshot::of(m, &self.classes);
        s.in_flight = in_flight;
        *self
            .live
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }

    /// Stops serving.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// Encodes one counter family: a row per label set.
pub(crate) fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut d = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(d.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes one unlabelled gauge.
pub(crate) fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let d = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(d)
}

/// Serves `GET /metrics` from `registry` on `addr` (anything else: 404) in a background task,
/// until the task is aborted: `run --metrics-addr`, and `dps serve`/`webhook serve` with theirs.
pub(crate) fn serve(
    addr: SocketAddr,
    registry: Registry,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (listener, _) = crate::listen::bind(addr)?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(registry);
    let task = tokio::spawn(async move {
        let limits = crate::listen::Limits::default();
        let _conns = crate::listen::accept(
            listener,
            "metrics",
            limits,
            std::future::pending(),
            |stream| {
                let registry = registry.clone();
                let service = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&req, &registry)) }
                });
                async move {
                    let _ = limits
                        .http1()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                }
            },
        )
        .await;
    });
    Ok((addr, task))
}

fn respond<B>(req: &hyper::Request<B>, registry: &Registry) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        return resp;
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        return resp;
    }
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    *resp.body_mut() = Full::new(Bytes::from(text));
    resp
}
