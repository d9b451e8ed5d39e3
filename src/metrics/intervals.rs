//! The HdrHistogram interval log (`latency.hlog`): one interval per second of the run, tagged
//! `latency`, `service`, `lag` and `latency.<class>`, each histogram V2-deflate encoded, so any
//! percentile over any window can be recomputed after the run and shard logs can be merged
//! exactly. Intervals are cut by completion time as the collector sees it.
//!
//! Only the current second is kept as histograms; finished seconds are encoded into the log
//! buffer at once (a few hundred bytes each), so memory stays flat however long the run.

use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::{Histos, HIGHEST_US};

/// The log being written.
#[derive(Debug, Clone)]
pub struct IntervalLog {
    second: u64,
    current: Histos,
    /// Per class, allocated at the class's first completion.
    classes: Vec<Option<Histogram<u64>>>,
    class_tags: Vec<String>,
    /// Device modes: connect, first response, DPS time (µs), tagged `phase.<name>`.
    phases: Option<[Histogram<u64>; 3]>,
    lines: Vec<u8>,
    /// Per second: (second, completions, p50 µs, p99 µs), for the report's time chart.
    pub timeline: Vec<(u64, u64, u64, u64)>,
}

impl IntervalLog {
    /// A log for these classes (their names become tags; characters a tag may not hold become `_`).
    pub fn new(class_names: &[String]) -> Self {
        Self {
            second: 0,
            current: Histos::new(),
            classes: class_names.iter().map(|_| None).collect(),
            class_tags: class_names
                .iter()
                .map(|n| {
                    let clean: String = n
                        .chars()
                        .map(|c| {
                            if matches!(c, ',' | ' ' | '\r' | '\n') {
                                '_'
                            } else {
                                c
                            }
                        })
                        .collect();
                    format!("latency.{clean}")
                })
                .collect(),
            phases: None,
            lines: Vec::new(),
            timeline: Vec::new(),
        }
    }

    /// Records one device registration's phases (after [`IntervalLog::record`] of the same sample).
    pub fn record_phases(&mut self, p: &super::Phases) {
        let h = || Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        let set = self.phases.get_or_insert_with(|| [h(), h(), h()]);
        for (h, d) in set.iter_mut().zip([p.connect, p.first_response, p.dps]) {
            if let Some(d) = d {
                h.saturating_record(d.as_micros().min(u128::from(HIGHEST_US)) as u64);
            }
        }
    }

    /// Records one completion `since_start` after the run's start.
    pub fn record(
        &mut self,
        since_start: Duration,
        class: usize,
        latency: u64,
        service: u64,
        lag: u64,
    ) {
        let second = since_start.as_secs();
        if second > self.second {
            self.flush();
            self.second = second;
        }
        self.current.latency.saturating_record(latency);
        self.current.service.saturating_record(service);
        self.current.lag.saturating_record(lag);
        if let Some(slot) = self.classes.get_mut(class) {
            slot.get_or_insert_with(|| {
                Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
            })
            .saturating_record(latency);
        }
    }

    /// Encodes the current second into the log and starts an empty one.
    fn flush(&mut self) {
        if self.current.latency.is_empty() {
            return;
        }
        let l = &self.current.latency;
        self.timeline.push((
            self.second,
            l.len(),
            l.highest_equivalent(l.value_at_quantile(0.5)),
            l.highest_equivalent(l.value_at_quantile(0.99)),
        ));
        let start = Duration::from_secs(self.second);
        let one = Duration::from_secs(1);
        let mut serializer = V2DeflateSerializer::new();
        let mut writer = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.lines, &mut serializer)
            .expect("writing to memory does not fail");
        let mut put = |h: &Histogram<u64>, tag: &str| {
            if !h.is_empty() {
                writer
                    .write_histogram(h, start, one, Tag::new(tag))
                    .expect("writing to memory does not fail");
            }
        };
        put(&self.current.latency, "latency");
        put(&self.current.service, "service");
        put(&self.current.lag, "lag");
        for (h, tag) in self.classes.iter().zip(&self.class_tags) {
            if let Some(h) = h {
                put(h, tag);
            }
        }
        if let Some(p) = &self.phases {
            for (h, tag) in p
                .iter()
                .zip(["phase.connect", "phase.first_response", "phase.dps"])
            {
                put(h, tag);
            }
        }
        self.current.latency.reset();
        self.current.service.reset();
        self.current.lag.reset();
        for h in self
            .classes
            .iter_mut()
            .flatten()
            .chain(self.phases.iter_mut().flatten())
        {
            h.reset();
        }
    }

    /// How many classes have a histogram allocated (those that completed a request).
    #[cfg(test)]
    pub(crate) fn class_histograms(&self) -> usize {
        self.classes.iter().flatten().count()
    }

    /// Closes the last second (idempotent).
    pub fn close(&mut self) {
        self.flush();
    }

    /// The whole log: header (start time, units, tags) then one line per tagged interval.
    pub fn finish(mut self, start: std::time::SystemTime) -> Vec<u8> {
        self.flush();
        let secs = start
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut out = format!(
            "#[loadtest {} interval log: values in microseconds, one interval per second]\n\
             #[Tags: latency (from the intended start), service (from the first send), lag (schedule), latency.<class>, phase.connect, phase.first_response, phase.dps (device modes)]\n\
             #[StartTime: {secs:.3} (seconds since epoch)]\n\
             #[BaseTime: {secs:.3} (seconds since epoch)]\n\
             \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes();
        out.extend_from_slice(&self.lines);
        out
    }
}
