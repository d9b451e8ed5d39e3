//! Command-line values that override scenario keys. They are written into the raw layer before
//! validation (ripgrep's low-level → high-level args), so a flag gets the same checks as the key
//! it overrides and an error names the flag (`--connections: must be at least 1`). After
//! validation nothing changes the [`Scenario`](super::Scenario).
//!
//! A value from a flag carries a span past the end of any file: [`flag_of`] reads the flag's name
//! back from it.

use toml::Spanned;

use super::raw;

/// The flags, in span order.
const NAMES: [&str; 13] = [
    "--url",
    "--rate",
    "--connections",
    "--duration",
    "--count",
    "--seed",
    "--shard",
    "--start",
    "--factor",
    "--step",
    "--hold",
    "--max",
    "--immediate",
];

const BASE: usize = usize::MAX - 64;

fn span(flag: &str) -> std::ops::Range<usize> {
    let i = NAMES.iter().position(|n| *n == flag).expect("a known flag");
    (BASE + i)..(BASE + i)
}

fn spanned<T>(flag: &str, v: T) -> Spanned<T> {
    Spanned::new(span(flag), v)
}

/// The flag a byte offset stands for, if it came from one.
pub(crate) fn flag_of(offset: usize) -> Option<&'static str> {
    offset.checked_sub(BASE).and_then(|i| NAMES.get(i)).copied()
}

/// The command-line overrides of one command.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--url`: the webhook (overrides `target.url`).
    pub url: Option<String>,
    /// `--rate`: a number per second or `max` (overrides `load.rate`; `max` drops the stages).
    pub rate: Option<String>,
    /// `--connections` (overrides `load.connections`).
    pub connections: Option<u32>,
    /// `--duration`, e.g. `30s` (with `--count`, replaces both `load.duration` and `load.count`;
    /// stages longer than it are dropped).
    pub duration: Option<String>,
    /// `--count`.
    pub count: Option<u64>,
    /// `--seed` (overrides `seed`).
    pub seed: Option<u64>,
    /// `--shard I/N`: a disjoint slice of the population at 1/N of the rate, connections, in-flight
    /// limit and count.
    pub shard: Option<(u32, u32)>,
    /// `loadtest plan`: `--start`, `--factor`, `--step`, `--hold`, `--max` (override
    /// `load.search`).
    pub search: SearchFlags,
    /// `loadtest dps serve --immediate` (overrides `emulator.immediate`).
    pub immediate: bool,
}

/// `loadtest plan`'s search flags.
#[derive(Debug, Clone, Default)]
pub struct SearchFlags {
    /// `--start`.
    pub start: Option<f64>,
    /// `--factor`.
    pub factor: Option<f64>,
    /// `--step`.
    pub step: Option<f64>,
    /// `--hold`.
    pub hold: Option<String>,
    /// `--max`.
    pub max: Option<f64>,
}

impl Flags {
    /// Writes the flags into the raw scenario.
    pub(crate) fn apply(&self, r: &mut raw::Scenario) {
        if let Some(u) = &self.url {
            r.target.url = Some(spanned("--url", u.clone()));
        }
        if let Some(rate) = &self.rate {
            let v = match rate.trim().parse::<f64>() {
                Ok(x) => raw::Rate::PerSecond(x),
                Err(_) => raw::Rate::Word(rate.trim().to_owned()),
            };
            r.load.rate = Some(spanned("--rate", v));
        }
        if let Some(c) = self.connections {
            r.load.connections = Some(spanned("--connections", c));
        }
        if self.duration.is_some() || self.count.is_some() {
            r.load.duration = self.duration.clone().map(|d| spanned("--duration", d));
            r.load.count = self.count.map(|c| spanned("--count", c));
        }
        if let Some(seed) = self.seed {
            r.seed = Some(seed);
        }
        let s = &self.search;
        if s.start.is_some()
            || s.factor.is_some()
            || s.step.is_some()
            || s.hold.is_some()
            || s.max.is_some()
        {
            let search = r.load.search.get_or_insert_with(raw::Search::default);
            let set = |slot: &mut Option<Spanned<f64>>, flag: &str, v: Option<f64>| {
                if let Some(v) = v {
                    *slot = Some(spanned(flag, v));
                }
            };
            set(&mut search.start, "--start", s.start);
            set(&mut search.factor, "--factor", s.factor);
            set(&mut search.step, "--step", s.step);
            set(&mut search.max, "--max", s.max);
            if let Some(h) = &s.hold {
                search.hold = Some(spanned("--hold", h.clone()));
            }
        }
        if self.immediate {
            r.emulator
                .get_or_insert_with(raw::Emulator::default)
                .immediate = Some(true);
        }
    }

    /// The flags that change what a run does, as one canonical line (for the scenario's hash;
    /// `--shard` is left out: every shard of a run has the same identity).
    pub(crate) fn identity(&self) -> String {
        let s = &self.search;
        format!(
            "url={:?};rate={:?};connections={:?};duration={:?};count={:?};seed={:?};search={:?},{:?},{:?},{:?},{:?};immediate={}",
            self.url,
            self.rate,
            self.connections,
            self.duration,
            self.count,
            self.seed,
            s.start,
            s.factor,
            s.step,
            s.hold,
            s.max,
            self.immediate
        )
    }

    /// The span `--shard` errors point at.
    pub(crate) fn shard_span() -> std::ops::Range<usize> {
        span("--shard")
    }

    /// True when `--rate max` (or a `--duration`) was given: the file's stages may be dropped.
    pub(crate) fn rate_is_max(&self) -> bool {
        self.rate.as_deref().is_some_and(|r| r.trim() == "max")
    }
}
