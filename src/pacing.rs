//! The open-loop schedule: the intended send instant of every request, in closed form.
//!
//! A run is a start rate, optional linear ramp stages (k6 `ramping-arrival-rate`), then a hold at
//! the last rate. Request `k` is due when the integral of the rate reaches `k`, so a stage that
//! ramps from `a` to `b` over `T` places request `m` of that stage at the root of
//! `a·x + (b−a)·x²/(2T) = m`. Latency is measured from these instants (wrk2's coordinated-omission
//! correction), never from when the pacer happened to wake. No I/O and no clock here: the driver
//! turns offsets into `tokio::time::Instant`s.

use std::time::Duration;

/// A linear ramp to `to` arrivals per second over `over`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// Target rate at the end of the stage.
    pub to: f64,
    /// Length of the stage.
    pub over: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Start offset in seconds.
    t0: f64,
    /// Length in seconds (infinite for the final hold).
    len: f64,
    /// Rate at the start and the end (per second).
    a: f64,
    b: f64,
    /// Requests scheduled before this segment.
    before: f64,
}

impl Segment {
    fn events(&self) -> f64 {
        if self.len.is_infinite() {
            return if self.a > 0.0 { f64::INFINITY } else { 0.0 };
        }
        (self.a + self.b) * self.len / 2.0
    }

    /// Offset (from the segment start) at which `m` requests of this segment have been reached.
    fn solve(&self, m: f64) -> f64 {
        if m <= 0.0 {
            return 0.0;
        }
        if (self.b - self.a).abs() < f64::EPSILON || self.len.is_infinite() {
            return m / self.a;
        }
        let k = (self.b - self.a) / self.len;
        // k/2·x² + a·x − m = 0; the sqrt argument is clamped against −0 (k6 `noNegativeSqrt`).
        let disc = (self.a * self.a + 2.0 * k * m).max(0.0);
        ((disc.sqrt() - self.a) / k).clamp(0.0, self.len)
    }
}

/// The intended send offsets of a run.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    segments: Vec<Segment>,
    total: u64,
}

impl Schedule {
    /// Builds a schedule from a start rate, stages and stop conditions. With neither `duration`
    /// nor `count` the caller must pass a count (e.g. one pass over the population).
    pub(crate) fn new(
        start_rate: f64,
        stages: &[Stage],
        duration: Option<Duration>,
        count: Option<u64>,
    ) -> Self {
        let mut segments = Vec::with_capacity(stages.len() + 1);
        let (mut t, mut rate, mut before) = (0.0, start_rate, 0.0);
        for s in stages {
            let seg = Segment {
                t0: t,
                len: s.over.as_secs_f64(),
                a: rate,
                b: s.to,
                before,
            };
            before += seg.events();
            t += seg.len;
            rate = s.to;
            segments.push(seg);
        }
        segments.push(Segment {
            t0: t,
            len: f64::INFINITY,
            a: rate,
            b: rate,
            before,
        });
        let mut schedule = Self {
            segments,
            total: u64::MAX,
        };
        let by_duration = duration.map(|d| schedule.due_before(d.as_secs_f64()));
        schedule.total = match (by_duration, count) {
            (Some(d), Some(c)) => d.min(c),
            (Some(d), None) => d,
            (None, Some(c)) => c,
            (None, None) => 0,
        };
        schedule
    }

    /// Number of requests scheduled.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Intended offset of request `k` from the start, or `None` past the end of the schedule.
    pub(crate) fn offset(&self, k: u64) -> Option<Duration> {
        if k >= self.total {
            return None;
        }
        let kf = k as f64;
        let seg = self.segments.iter().rev().find(|s| s.before <= kf)?;
        let x = seg.solve(kf - seg.before);
        if !x.is_finite() {
            return None;
        }
        Some(Duration::from_secs_f64(seg.t0 + x))
    }

    /// How many requests fall strictly before `t` seconds.
    fn due_before(&self, t: f64) -> u64 {
        let mut events = 0.0;
        for s in &self.segments {
            if t <= s.t0 {
                break;
            }
            let x = (t - s.t0).min(s.len);
            events = if s.len.is_infinite() {
                s.before + s.a * x
            } else {
                s.before + s.a * x + (s.b - s.a) * x * x / (2.0 * s.len)
            };
        }
        // Request k is at the instant the integral reaches k, so ceil counts those strictly before t.
        (events - 1e-9).ceil().max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn constant_rate() {
        let s = Schedule::new(1000.0, &[], Some(Duration::from_secs(2)), None);
        assert_eq!(s.total(), 2000);
        assert_eq!(s.offset(0), Some(Duration::ZERO));
        assert!((ms(s.offset(1).unwrap()) - 1.0).abs() < 1e-6);
        assert!((ms(s.offset(1999).unwrap()) - 1999.0).abs() < 1e-6);
        assert_eq!(s.offset(2000), None);
        let c = Schedule::new(3.0, &[], Some(Duration::from_secs(10)), Some(5));
        assert_eq!(c.total(), 5);
    }

    #[test]
    fn linear_ramp_then_hold() {
        // 0 → 100/s over 10 s: 500 requests in the ramp, then 100/s for 5 s more.
        let s = Schedule::new(
            0.0,
            &[Stage {
                to: 100.0,
                over: Duration::from_secs(10),
            }],
            Some(Duration::from_secs(15)),
            None,
        );
        assert_eq!(s.total(), 1000);
        // Request 125 is where 50·x²/10 = 125 → x = 5 s.
        assert!((s.offset(125).unwrap().as_secs_f64() - 5.0).abs() < 1e-9);
        assert!((s.offset(500).unwrap().as_secs_f64() - 10.0).abs() < 1e-9);
        assert!((s.offset(600).unwrap().as_secs_f64() - 11.0).abs() < 1e-9);
        // Offsets never go backwards.
        let mut last = Duration::ZERO;
        for k in 0..s.total() {
            let o = s.offset(k).unwrap();
            assert!(o >= last, "{k}");
            last = o;
        }
    }

    #[test]
    fn ramp_down() {
        let s = Schedule::new(
            200.0,
            &[Stage {
                to: 0.0,
                over: Duration::from_secs(2),
            }],
            Some(Duration::from_secs(2)),
            None,
        );
        assert_eq!(s.total(), 200);
        assert!(s.offset(199).unwrap().as_secs_f64() < 2.0);
    }
}
