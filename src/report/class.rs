//! One class's part of the report: its counts, outcomes, hubs, mismatching fields with examples
//! and most frequent (expected, actual) pairs, and its latency. Built from the class's
//! measurements; renders nothing.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Stats;
use crate::metrics::{ClassStats, Histos};

/// One class.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassSummary {
    /// Class name.
    pub name: String,
    /// Devices in the population.
    pub devices: u64,
    /// Requests answered.
    pub requests: u64,
    /// Expectation met.
    pub passed: u64,
    /// Expectation not met.
    pub failed: u64,
    /// Requests without an answer (transport error or timeout).
    pub no_answer: u64,
    /// Webhook calls (or device requests) beyond the first per request.
    pub retries: u64,
    /// Outcome counts.
    pub outcomes: BTreeMap<String, u64>,
    /// Assigned hubs.
    pub hubs: BTreeMap<String, u64>,
    /// Mismatching fields.
    pub mismatches: Vec<FieldMismatch>,
    /// Latency of this class.
    pub latency_us: Stats,
}

/// Mismatches of one field.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FieldMismatch {
    /// Field name (`hub`, `twin.tags`, …).
    pub field: String,
    /// How many requests.
    pub count: u64,
    /// A few examples.
    pub examples: Vec<Example>,
    /// The most frequent (expected, actual) pairs with their counts, most frequent first.
    pub common: Vec<Pair>,
    /// Requests whose pair is not in `common`.
    pub other: u64,
}

/// How often one (expected, actual) pair was seen.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Pair {
    /// Expected (JSON text).
    pub expected: String,
    /// Actual (JSON text).
    pub actual: String,
    /// Requests.
    pub count: u64,
}

/// One mismatch example.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Example {
    /// Device.
    pub registration_id: String,
    /// Expected (JSON text).
    pub expected: String,
    /// Actual (JSON text).
    pub actual: String,
}

impl ClassSummary {
    /// The summary of class `name` (`devices` in the population) from its counts and latencies.
    pub(super) fn build(name: &str, devices: u64, st: &ClassStats, histos: &Histos) -> Self {
        Self {
            name: name.to_owned(),
            devices,
            requests: st.requests,
            passed: st.passed,
            failed: st.failed,
            no_answer: st.no_answer,
            retries: st.retries,
            outcomes: st
                .outcomes
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            hubs: st.hubs.clone(),
            mismatches: st
                .mismatches
                .iter()
                .map(|(f, fs)| FieldMismatch {
                    field: f.name().into(),
                    count: fs.count,
                    examples: fs
                        .examples
                        .iter()
                        .map(|(r, e, a)| Example {
                            registration_id: r.clone(),
                            expected: e.clone(),
                            actual: a.clone(),
                        })
                        .collect(),
                    common: {
                        let mut v: Vec<Pair> = fs
                            .pairs
                            .iter()
                            .map(|((e, a), n)| Pair {
                                expected: e.clone(),
                                actual: a.clone(),
                                count: *n,
                            })
                            .collect();
                        v.sort_by_key(|p| std::cmp::Reverse(p.count));
                        v
                    },
                    other: fs.other_pairs,
                })
                .collect(),
            latency_us: Stats::of(&histos.latency),
        }
    }
}
