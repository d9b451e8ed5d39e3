//! The HdrHistogram interval log (`latency.hlog`): one interval per second of the run, tagged
//! `latency`, `service`, `lag` and `latency.<class>`, each histogram V2-deflate encoded, so any
//! percentile over any window can be recomputed after the run and shard logs can be merged
//! exactly. Intervals are cut by completion time as the collector sees it.
//!
//! Only the current second is kept as histograms; finished seconds are encoded into the log
//! buffer at once (a few hundred bytes each), so memory stays flat however long the run. The
//! untagged-by-class intervals are the run's overall histograms minus what they held at the
//! previous second, not histograms of their own: a request is recorded once, not twice (and a run
//! of one class writes its latency interval again under the class's tag).

use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::{Histos, HIGHEST_US};

/// The log being written.
#[derive(Debug, Clone)]
pub struct IntervalLog {
    second: u64,
    /// The overall histograms as the last interval left them.
    seen: Histos,
    /// Per class, allocated at the class's first completion.
    classes: Vec<Option<Histogram<u64>>>,
    class_tags: Vec<String>,
    /// Device modes: connect, first response, DPS time (µs), tagged `phase.<name>`.
    phases: Option<[Histogram<u64>; 3]>,
    lines: Vec<u8>,
    /// What the current second ended with, besides its histograms.
    counts: Counts,
    /// One row per second that completed anything, for the report's time chart.
    pub timeline: Vec<Second>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    failed: u64,
    timed_out: u64,
    throttled: u64,
}

/// One second of the run, as the over-time chart draws it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// How much of the second the run covered (below 1 for the last, partial second), so that a
    /// rate is `count / length_s` and the last point is not drawn as a collapse.
    pub length_s: f64,
    /// Requests that ended in this second (answered or not).
    pub ended: u64,
    /// Of them, ended by a transport error.
    pub failed: u64,
    /// Of them, timed out (abandoned ones included).
    pub timed_out: u64,
    /// 429 answers seen by the requests that ended in this second.
    pub throttled: u64,
    /// Latency p50 (µs).
    pub p50_us: u64,
    /// Latency p99 (µs).
    pub p99_us: u64,
}

impl IntervalLog {
    /// A log for these classes (their names become tags; characters a tag may not hold become `_`).
    pub fn new(class_names: &[String]) -> Self {
        Self {
            second: 0,
            seen: Histos::new(),
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
            counts: Counts::default(),
            timeline: Vec::new(),
        }
    }

    /// Records one device registration's phases (after [`IntervalLog::record`] of the same sample).
    pub fn record_phases(&mut self, p: &super::Phases) {
        let h = || Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds");
        let set = self.phases.get_or_insert_with(|| [h(), h(), h()]);
        for (h, d) in set.iter_mut().zip([p.connect, p.first_response, p.dps]) {
            if let Some(d) = d {
                h.saturating_record(super::us(d));
            }
        }
    }

    /// Records one request that ended `since_start` after the run's start: its latency (µs),
    /// how it ended and the 429s it saw. `overall`: the run's histograms before this request.
    pub fn record(
        &mut self,
        since_start: Duration,
        class: usize,
        latency: u64,
        end: crate::outcome::End,
        throttled: u32,
        overall: &Histos,
    ) {
        let second = since_start.as_secs();
        if second > self.second {
            self.flush(1.0, overall);
            self.second = second;
        }
        match end {
            crate::outcome::End::Answered => {}
            crate::outcome::End::Transport => self.counts.failed += 1,
            crate::outcome::End::TimedOut => self.counts.timed_out += 1,
        }
        self.counts.throttled += u64::from(throttled);
        // A run's only class has the overall latency interval as its own (see `flush`).
        if self.classes.len() == 1 {
            return;
        }
        if let Some(slot) = self.classes.get_mut(class) {
            slot.get_or_insert_with(|| {
                Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
            })
            .saturating_record(latency);
        }
    }

    /// Encodes the current second (`length_s` of it covered; `overall` as it stands at its end)
    /// into the log and starts an empty one.
    fn flush(&mut self, length_s: f64, overall: &Histos) {
        if overall.latency.len() == self.seen.latency.len() {
            return;
        }
        // What the overall histograms gained since the last interval (they only grow).
        let mut current = overall.clone();
        for (c, s) in [
            (&mut current.latency, &self.seen.latency),
            (&mut current.service, &self.seen.service),
            (&mut current.lag, &self.seen.lag),
        ] {
            c.subtract(s)
                .expect("the overall histograms contain what they held before");
        }
        self.seen.clone_from(overall);
        let l = &current.latency;
        let c = std::mem::take(&mut self.counts);
        self.timeline.push(Second {
            second: self.second,
            length_s,
            ended: l.len(),
            failed: c.failed,
            timed_out: c.timed_out,
            throttled: c.throttled,
            p50_us: l.highest_equivalent(l.value_at_quantile(0.5)),
            p99_us: l.highest_equivalent(l.value_at_quantile(0.99)),
        });
        let start = Duration::from_secs(self.second);
        let one = Duration::from_secs_f64(length_s);
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
        put(&current.latency, "latency");
        put(&current.service, "service");
        put(&current.lag, "lag");
        if let [tag] = self.class_tags.as_slice() {
            put(&current.latency, tag);
        }
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

    /// Closes the last second, which the run covered up to `end` since its start, `overall` the
    /// run's final histograms (idempotent).
    pub fn close(&mut self, end: Duration, overall: &Histos) {
        let covered = end.as_secs_f64() - self.second as f64;
        self.flush(covered.clamp(0.001, 1.0), overall);
    }

    /// The whole log: header (start time, units, tags) then one line per tagged interval.
    pub fn finish(mut self, start: std::time::SystemTime, overall: &Histos) -> Vec<u8> {
        self.flush(1.0, overall);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::End;

    /// Each second counts how its requests ended and the 429s they saw; the last second knows how
    /// much of it the run covered, so its rate is not drawn as a collapse to zero.
    #[test]
    fn seconds_count_errors_timeouts_and_429s_and_the_last_is_partial() {
        let mut log = IntervalLog::new(&["a".to_owned()]);
        let mut overall = Histos::new();
        let at = |ms: u64| Duration::from_millis(ms);
        let mut record = |ms: u64, t: [u64; 3], end, throttled| {
            log.record(at(ms), 0, t[0], end, throttled, &overall);
            overall.record(t);
        };
        for i in 0..100 {
            record(i * 10, [1000, 900, 100], End::Answered, 0);
        }
        record(1100, [5_000_000, 5_000_000, 0], End::TimedOut, 0);
        record(1200, [2000, 2000, 0], End::Transport, 0);
        record(1300, [3000, 3000, 0], End::Answered, 2);
        for i in 0..25 {
            record(2000 + i * 10, [1000, 900, 100], End::Answered, 0);
        }
        log.close(at(2250), &overall);
        let t = &log.timeline;
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].ended, t[0].failed, t[0].timed_out, t[0].throttled),
            (100, 0, 0, 0)
        );
        assert_eq!(
            (t[1].ended, t[1].failed, t[1].timed_out, t[1].throttled),
            (3, 1, 1, 2)
        );
        assert_eq!(t[0].length_s, 1.0);
        assert!((t[2].length_s - 0.25).abs() < 1e-9, "{}", t[2].length_s);
        // 25 in a quarter of a second: the same 100/s as the full seconds before it.
        assert!((t[2].ended as f64 / t[2].length_s - 100.0).abs() < 1e-6);
        // The seconds' latencies are those of their own requests.
        assert_eq!((t[0].p50_us, t[0].p99_us), (1000, 1000));
        assert_eq!(
            t[1].p99_us, 5_001_215,
            "the timed-out request is the second's own"
        );
        assert_eq!(t[2].p99_us, 1000);
        // Closing again changes nothing.
        log.close(at(2300), &overall);
        assert_eq!(log.timeline.len(), 3);
    }

    /// A run of one class records no class histogram of its own, yet its log holds the class's
    /// interval: the overall latency interval, under the class's tag. With two classes each has
    /// its own.
    #[test]
    fn one_class_logs_its_interval_from_the_overall_latency() {
        let intervals = |names: &[&str], classes: &[usize]| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let mut log = IntervalLog::new(&names);
            let mut overall = Histos::new();
            for (i, &c) in classes.iter().enumerate() {
                let t = [1000 + 100 * i as u64, 900, 100];
                log.record(
                    Duration::from_millis(10 * i as u64),
                    c,
                    t[0],
                    End::Answered,
                    0,
                    &overall,
                );
                overall.record(t);
            }
            let held = log.class_histograms();
            let text = String::from_utf8(log.finish(std::time::UNIX_EPOCH, &overall)).unwrap();
            let mut lines = std::collections::BTreeMap::new();
            for l in text.lines().filter(|l| l.starts_with("Tag=")) {
                let (tag, rest) = l.trim_start_matches("Tag=").split_once(',').unwrap();
                lines.insert(tag.to_owned(), rest.to_owned());
            }
            (held, lines)
        };
        let (held, one) = intervals(&["toaster"], &[0, 0, 0]);
        assert_eq!(held, 0);
        assert_eq!(one["latency.toaster"], one["latency"]);
        let (held, two) = intervals(&["toaster", "heatpump"], &[0, 1, 0]);
        assert_eq!(held, 2);
        assert_ne!(two["latency.toaster"], two["latency"]);
        assert_ne!(two["latency.heatpump"], two["latency"]);
    }
}
