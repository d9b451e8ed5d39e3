//! Measurements of a run: one [`Sample`] per scheduled request that was sent, folded by a single
//! collector into HdrHistograms (µs, 3 significant digits) and counters. Memory is flat in the run
//! length: nothing is kept per request except a bounded number of mismatch and error examples.
//!
//! Three times per request (wrk2's method): `latency` = done − intended (what a device would
//! experience, coordinated-omission corrected), `service` = done − first send (what the target
//! spent, retries included), `lag` = first send − intended (how late the generator was).

pub(crate) mod intervals;
mod phases;

pub(crate) use phases::{PhaseHistos, Phases};

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::check::{Field, Mismatch};
use crate::dps::OutcomeKey;
use crate::transcript::{ClassObservations, Observation};

/// Highest recordable value: one hour in µs (larger values saturate).
pub(crate) const HIGHEST_US: u64 = 3_600_000_000;
/// Distinct transport-error messages kept.
const MAX_ERROR_KINDS: usize = 20;

pub(crate) use crate::outcome::End;
use crate::outcome::{Failure, Source};

/// The result of one scheduled request, with its times as µs already and what only some
/// requests have boxed apart: the common case (an answer that met its expectation) is 80 bytes
/// instead of 160. Every sample is written on a lane and read by the collector, so its size is
/// memory traffic on every request.
#[derive(Debug)]
pub struct Sample {
    /// Class index.
    pub class: u32,
    /// done − intended (µs).
    pub latency_us: u32,
    /// done − first send (µs).
    pub service_us: u32,
    /// first send − intended (µs).
    pub lag_us: u32,
    /// HTTP attempts made (1 + retries; 0 when DPS did not call the webhook).
    pub attempts: u32,
    /// 429 answers on the way (webhook or DPS).
    pub throttled: u32,
    /// How the last attempt ended.
    pub end: End,
    /// The DPS outcome as the device would see it.
    pub outcome: OutcomeKey,
    /// Final answer (after retries).
    pub done: Instant,
    /// The assigned hub, when assigned.
    pub hub: Option<std::sync::Arc<str>>,
    /// What only some requests have.
    pub extra: Option<Box<Extra>>,
}

/// The parts of a [`Sample`] that only some requests have.
#[derive(Debug, Default)]
pub struct Extra {
    /// Registration ID and differing fields, only when the expectation failed.
    pub mismatch: Option<(String, Vec<Mismatch>)>,
    /// Why no answer came (source and message), only when `end` is not `Answered`, or why a
    /// device's registration failed before DPS answered.
    pub error: Option<Failure>,
    /// What the request showed in full (conformance mode only; boxed, as it is most of the
    /// size of this struct, which device modes allocate for every registration's phases).
    pub observed: Option<Box<Observation>>,
    /// Per-phase timings (device modes only).
    pub phases: Option<Phases>,
}

impl Sample {
    /// A sample intended at `intended`, first sent at `sent` and done at `done` (the µs times;
    /// the rest as for an answer that met its expectation).
    pub fn timed(class: u32, intended: Instant, sent: Instant, done: Instant) -> Self {
        // HIGHEST_US fits in a u32.
        let us = |d: Duration| us(d) as u32;
        // Two instant subtractions, not three: the lag is the latency less the service time,
        // exactly (both are whole nanoseconds of one clock).
        let latency = done.saturating_duration_since(intended);
        let service = done.saturating_duration_since(sent);
        Self {
            class,
            latency_us: us(latency),
            service_us: us(service),
            lag_us: us(if sent >= intended {
                latency.saturating_sub(service)
            } else {
                Duration::ZERO
            }),
            attempts: 1,
            throttled: 0,
            end: End::Answered,
            outcome: OutcomeKey {
                status: crate::dps::Status::Assigned,
                code: None,
            },
            done,
            hub: None,
            extra: None,
        }
    }

    /// The extra parts, created when first needed.
    pub fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Why no answer came, if so.
    pub fn error(&self) -> Option<&Failure> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    /// The per-phase timings, if any.
    pub fn phases(&self) -> Option<&Phases> {
        self.extra.as_ref().and_then(|e| e.phases.as_ref())
    }
}

/// The three latency histograms.
#[derive(Debug, Clone)]
pub struct Histos {
    /// done − intended.
    pub latency: Histogram<u64>,
    /// done − first send.
    pub service: Histogram<u64>,
    /// first send − intended.
    pub lag: Histogram<u64>,
}

impl Histos {
    pub(crate) fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        Self {
            latency: h(),
            service: h(),
            lag: h(),
        }
    }

    /// Records one request's latency, service time and lag (µs).
    pub(crate) fn record(&mut self, [latency, service, lag]: [u64; 3]) {
        self.latency.saturating_record(latency);
        self.service.saturating_record(service);
        self.lag.saturating_record(lag);
    }
}

/// One more of `key` (found and incremented in place: the entry API's vacant-entry path is not
/// paid for the outcome every request after the first has).
fn count(map: &mut BTreeMap<OutcomeKey, u64>, key: OutcomeKey) {
    match map.get_mut(&key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key, 1);
        }
    }
}

/// `d` in µs, saturated at [`HIGHEST_US`]; in u64, as `as_micros` is u128 arithmetic (three
/// times per request).
pub(crate) fn us(d: Duration) -> u64 {
    let us = d.as_secs().saturating_mul(1_000_000) + u64::from(d.subsec_micros());
    us.min(HIGHEST_US)
}

/// Up to N examples of one field's mismatches, and how often each (expected, actual) pair was
/// seen (the first [`MAX_PAIRS`] distinct pairs; the rest are counted together).
#[derive(Debug, Clone, Default)]
pub struct FieldStats {
    /// How many requests differed in this field.
    pub count: u64,
    /// (registration ID, expected, actual).
    pub examples: Vec<(String, String, String)>,
    /// (expected, actual) → requests.
    pub pairs: BTreeMap<(String, String), u64>,
    /// Requests whose pair was not among the first [`MAX_PAIRS`] distinct ones.
    pub other_pairs: u64,
}

/// Distinct (expected, actual) pairs counted per class and field.
pub(crate) const MAX_PAIRS: usize = 8;

impl FieldStats {
    /// Counts `n` requests that showed `actual` where `expected` was expected.
    pub(crate) fn count_pair(&mut self, expected: &str, actual: &str, n: u64) {
        let key = (expected.to_owned(), actual.to_owned());
        if let Some(c) = self.pairs.get_mut(&key) {
            *c += n;
        } else if self.pairs.len() < MAX_PAIRS {
            self.pairs.insert(key, n);
        } else {
            self.other_pairs += n;
        }
    }
}

/// Per-class statistics.
#[derive(Debug, Clone)]
pub struct ClassStats {
    /// Requests answered for this class.
    pub requests: u64,
    /// Requests whose outcome met the expectation.
    pub passed: u64,
    /// Requests whose outcome did not.
    pub failed: u64,
    /// Requests without an answer (transport error or timeout).
    pub no_answer: u64,
    /// Webhook calls beyond the first (DPS's retries).
    pub retries: u64,
    /// Outcome counts.
    pub outcomes: BTreeMap<OutcomeKey, u64>,
    /// Mismatches per field.
    pub mismatches: BTreeMap<Field, FieldStats>,
    /// Assigned hubs and how often.
    pub hubs: BTreeMap<String, u64>,
    /// Latencies, allocated at the class's first sample (a class's three histograms take
    /// ~0.5 MB, so a scenario with thousands of classes pays only for those a run reaches).
    histos: Option<Box<Histos>>,
}

impl ClassStats {
    fn new() -> Self {
        Self {
            requests: 0,
            passed: 0,
            failed: 0,
            no_answer: 0,
            retries: 0,
            outcomes: BTreeMap::new(),
            mismatches: BTreeMap::new(),
            hubs: BTreeMap::new(),
            histos: None,
        }
    }

    /// The class's own latencies (empty histograms before its first sample); read them through
    /// [`Metrics::class_histos`], which knows when a run's only class has none of its own.
    fn histos(&self) -> &Histos {
        static EMPTY: std::sync::OnceLock<Histos> = std::sync::OnceLock::new();
        self.histos
            .as_deref()
            .unwrap_or_else(|| EMPTY.get_or_init(Histos::new))
    }

    /// The class's latencies, for recording or merging into.
    pub(crate) fn histos_mut(&mut self) -> &mut Histos {
        self.histos.get_or_insert_with(|| Box::new(Histos::new()))
    }
}

/// Everything measured in a run.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Per class, in scenario order.
    pub classes: Vec<ClassStats>,
    /// All classes.
    pub overall: Histos,
    /// Outcome counts, all classes.
    pub outcomes: BTreeMap<OutcomeKey, u64>,
    /// Samples received.
    pub samples: u64,
    /// Ended with an answer.
    pub completed: u64,
    /// Ended with a transport error.
    pub failed: u64,
    /// Ended with a timeout.
    pub timed_out: u64,
    /// HTTP attempts (retries included).
    pub attempts: u64,
    /// Failures by source and message, with counts.
    pub errors: BTreeMap<(Source, String), u64>,
    /// Completions per second since the start (for throughput over time).
    pub per_second: Vec<u64>,
    /// Latest completion.
    pub last_done: Option<Instant>,
    /// Per class, what the requests showed (conformance mode only).
    pub observations: Option<Vec<ClassObservations>>,
    /// Per-phase histograms (device modes only).
    pub phases: Option<PhaseHistos>,
    /// The per-second interval log (`latency.hlog`).
    pub intervals: Option<intervals::IntervalLog>,
    start: Instant,
    examples: usize,
}

impl Metrics {
    /// Time since the schedule's zero (zero before it).
    pub fn elapsed(&self) -> std::time::Duration {
        Instant::now().saturating_duration_since(self.start)
    }
}

impl Metrics {
    /// Empty metrics for `classes` classes.
    pub fn new(classes: usize, start: Instant, examples: usize, observe: bool) -> Self {
        Self {
            classes: (0..classes).map(|_| ClassStats::new()).collect(),
            overall: Histos::new(),
            outcomes: BTreeMap::new(),
            samples: 0,
            completed: 0,
            failed: 0,
            timed_out: 0,
            attempts: 0,
            errors: BTreeMap::new(),
            per_second: Vec::new(),
            last_done: None,
            observations: observe.then(|| vec![ClassObservations::default(); classes]),
            phases: None,
            intervals: None,
            start,
            examples,
        }
    }

    /// Folds one sample in.
    pub fn record(&mut self, s: Sample) {
        self.samples += 1;
        self.attempts += u64::from(s.attempts);
        match s.end {
            End::Answered => self.completed += 1,
            End::Transport => self.failed += 1,
            End::TimedOut => self.timed_out += 1,
        }
        if let Some(f) = s.error() {
            let key = (f.source, f.message.clone());
            if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&key) {
                *self.errors.entry(key).or_default() += 1;
            }
        }
        let since_start = s.done.saturating_duration_since(self.start);
        let second = since_start.as_secs() as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        self.last_done = Some(self.last_done.map_or(s.done, |d| d.max(s.done)));
        let times = [s.latency_us, s.service_us, s.lag_us].map(u64::from);
        if let Some(log) = &mut self.intervals {
            log.record(
                since_start,
                s.class as usize,
                times[0],
                s.end,
                s.throttled,
                &self.overall,
            );
            if let Some(p) = s.phases() {
                log.record_phases(p);
            }
        }
        self.overall.record(times);
        if let Some(p) = s.phases() {
            self.phases.get_or_insert_with(PhaseHistos::new).record(p);
        }
        count(&mut self.outcomes, s.outcome);
        let per_class = self.per_class_histos();
        let c = &mut self.classes[s.class as usize];
        c.requests += 1;
        c.retries += u64::from(s.attempts.saturating_sub(1));
        if s.end != End::Answered {
            c.no_answer += 1;
        }
        if per_class {
            c.histos_mut().record(times);
        }
        // Most samples have no extra parts: no default `Extra` is built and taken apart for them.
        let (mismatch, observed) = match s.extra {
            Some(e) => {
                let Extra {
                    mismatch, observed, ..
                } = *e;
                (mismatch, observed)
            }
            None => (None, None),
        };
        if let (Some(obs), Some(o)) = (&mut self.observations, observed) {
            let none: &[Mismatch] = &[];
            let fields = mismatch.as_ref().map_or(none, |m| m.1.as_slice());
            obs[s.class as usize].add(*o, fields);
        }
        count(&mut c.outcomes, s.outcome);
        if let Some(hub) = s.hub {
            match c.hubs.get_mut(&*hub) {
                Some(n) => *n += 1,
                None => {
                    c.hubs.insert(hub.to_string(), 1);
                }
            }
        }
        match mismatch {
            None => c.passed += 1,
            Some((id, fields)) => {
                c.failed += 1;
                for f in fields {
                    let st = c.mismatches.entry(f.field).or_default();
                    st.count += 1;
                    st.count_pair(&f.expected, &f.actual, 1);
                    if st.examples.len() < self.examples {
                        st.examples.push((id.clone(), f.expected, f.actual));
                    }
                }
            }
        }
    }

    /// The run's start instant.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Whether each class keeps latency histograms of its own. A run of one class does not: its
    /// class's histograms would be the overall ones, sample for sample, and recording each
    /// request into both was 3 of its 7 histogram records.
    pub(crate) fn per_class_histos(&self) -> bool {
        self.classes.len() > 1
    }

    /// Class `i`'s latencies (empty before its first sample).
    pub fn class_histos(&self, i: usize) -> &Histos {
        if self.per_class_histos() {
            self.classes[i].histos()
        } else {
            &self.overall
        }
    }

    /// Whether class `i` recorded any latency (the report's histograms file leaves out those
    /// without).
    pub fn class_has_histos(&self, i: usize) -> bool {
        if self.per_class_histos() {
            self.classes[i].histos.is_some()
        } else {
            !self.overall.latency.is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Sample>(), 80);
    }

    #[test]
    fn records_three_times_and_counts() {
        let t0 = Instant::now();
        let mut m = Metrics::new(1, t0, 1, false);
        for i in 0..3u64 {
            let intended = t0 + Duration::from_millis(i);
            let mut s = Sample::timed(
                0,
                intended,
                intended + Duration::from_micros(100),
                intended + Duration::from_millis(5),
            );
            if i == 2 {
                s.end = End::TimedOut;
            }
            if i == 1 {
                s.extra_mut().mismatch = Some((
                    "dev1".to_owned(),
                    vec![Mismatch {
                        field: Field::Hub,
                        expected: "\"a\"".into(),
                        actual: "\"b\"".into(),
                    }],
                ));
            }
            s.hub = Some("h".into());
            m.record(s);
        }
        assert_eq!((m.completed, m.timed_out, m.samples), (2, 1, 3));
        assert_eq!((m.classes[0].passed, m.classes[0].failed), (2, 1));
        assert_eq!(m.classes[0].mismatches[&Field::Hub].examples.len(), 1);
        assert_eq!(m.classes[0].hubs["h"], 3);
        let l = &m.overall.lag;
        assert_eq!(l.value_at_quantile(0.5), l.highest_equivalent(100));
        assert!(m.overall.latency.value_at_quantile(1.0) >= 5000);
        assert!(m.overall.service.value_at_quantile(1.0) < 5000);
    }

    /// A run of one class records each request's times once: its class reads the overall
    /// histograms. A run of two records them per class as well.
    #[test]
    fn one_class_reads_the_overall_histograms() {
        let t0 = Instant::now();
        let sample = |class, ms| Sample::timed(class, t0, t0, t0 + Duration::from_millis(ms));
        let mut one = Metrics::new(1, t0, 1, false);
        one.record(sample(0, 3));
        one.record(sample(0, 7));
        assert!(one.classes[0].histos.is_none());
        assert!(one.class_has_histos(0));
        assert_eq!(one.class_histos(0).latency.len(), 2);
        assert_eq!(one.class_histos(0).latency.max(), one.overall.latency.max());
        let mut two = Metrics::new(2, t0, 1, false);
        two.record(sample(0, 3));
        two.record(sample(1, 7));
        assert_eq!(two.class_histos(0).latency.len(), 1);
        assert!(two.class_histos(0).latency.max() < two.class_histos(1).latency.min());
        assert_eq!(two.overall.latency.len(), 2);
    }

    /// Memory follows the work: a scenario of 1,000 classes whose run reaches 5 of them holds
    /// latency histograms for those 5 only (each class's set is ~0.75 MB; allocating all of them
    /// up front took 750 MB of RSS for a 5-request run).
    #[test]
    fn class_histograms_are_allocated_at_first_sample() {
        let t0 = Instant::now();
        let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
        let mut m = Metrics::new(names.len(), t0, 1, false);
        m.intervals = Some(intervals::IntervalLog::new(&names));
        for class in [0u32, 10, 500, 998, 999] {
            m.record(Sample::timed(class, t0, t0, t0 + Duration::from_millis(3)));
        }
        let with: Vec<usize> = (0..1000).filter(|&i| m.class_has_histos(i)).collect();
        assert_eq!(with, [0, 10, 500, 998, 999]);
        assert_eq!(m.intervals.as_ref().unwrap().class_histograms(), 5);
        // A class without samples still reads as empty histograms.
        assert!(m.class_histos(1).latency.is_empty());
        assert_eq!(m.class_histos(999).latency.len(), 1);
    }
}
