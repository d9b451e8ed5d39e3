//! `loadtest check`: conformance mode. Every device class is exercised (a sample spread evenly
//! over each class's range, or all devices) at a gentle rate, the outcomes are reduced to a
//! normalised [`transcript`], and the transcript is compared with the committed [`snapshot`].
//! Thresholds and expectations are evaluated exactly as in `loadtest run`.
//!
//! Measuring is `run::run`'s job; exit codes are the CLI's. This module only chooses the
//! sample, builds the transcript and records the comparison in the report.

pub(crate) mod snapshot;
pub(crate) use crate::transcript;

use std::path::{Path, PathBuf};

use crate::device::{Device, Population};
use crate::driver::Stop;
use crate::report::SnapshotResult;
use crate::run::{self, Finished, Overrides, RunError};
use crate::scenario::Scenario;
use snapshot::Comparison;
use transcript::ClassTranscript;

/// Options of `loadtest check` beyond those shared with `run`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CheckOptions {
    /// Accept the transcript as the new snapshot.
    pub update: bool,
    /// Snapshot file (default: `[check] snapshot`, then `snapshots/<name>.snap`).
    pub snapshot: Option<PathBuf>,
}

/// A finished check.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The run and its report (the summary includes the snapshot result).
    pub finished: Finished,
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The comparison; `None` when the run was cut short (an incomplete transcript is never
    /// compared or written).
    pub comparison: Option<Comparison>,
}

/// `loadtest check` could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The snapshot or transcript could not be read or written.
    #[error("{}: {source}", path.display())]
    Snapshot {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The devices `loadtest check` exercises: per class, `per_class` numbers spread evenly over
/// its range (first and last included), or all of them.
pub(crate) fn sample(s: &Scenario) -> Vec<Vec<u64>> {
    s.classes
        .iter()
        .map(|c| {
            let (a, b) = c.range;
            let size = b - a + 1;
            match s.check.sample {
                Some(k) if k < size => {
                    if k == 1 {
                        return vec![a];
                    }
                    // Exact integer spacing: distinct because size > k.
                    (0..k)
                        .map(|i| {
                            a + (u128::from(i) * u128::from(size - 1) / u128::from(k - 1)) as u64
                        })
                        .collect()
                }
                _ => (a..=b).collect(),
            }
        })
        .collect()
}

/// Runs the check: sample, run, transcript, compare, report.
pub(crate) async fn check(
    s: &Scenario,
    o: &Overrides,
    opts: &CheckOptions,
    stop: Stop,
) -> Result<Checked, CheckError> {
    let sampled = sample(s);
    let devices: Vec<Device> = sampled
        .iter()
        .enumerate()
        .flat_map(|(class, ns)| {
            ns.iter().map(move |&n| Device {
                class: class as u32,
                n,
            })
        })
        .collect();
    let count = devices.len() as u64;
    let load = s.load.flat(s.check.rate, None, Some(count));
    let population = Population::from_devices(devices, s.seed);
    let mut finished = run::run(s, &load, o, stop, Some(population)).await?;
    let snap = opts
        .snapshot
        .clone()
        .or_else(|| s.check.snapshot.clone())
        .unwrap_or_else(|| Path::new("snapshots").join(format!("{}.snap", s.name)));
    let complete = {
        let r = &finished.summary.requests;
        !finished.summary.interrupted
            && finished.summary.aborted_by.is_none()
            && r.not_sent == 0
            && r.completed + r.failed + r.timed_out == count
    };
    if !complete {
        return Ok(Checked {
            finished,
            snapshot: snap,
            comparison: None,
        });
    }
    let text = transcript_of(s, &sampled, &finished);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| CheckError::Snapshot { path, source }
    };
    std::fs::write(finished.dir.join("transcript.txt"), &text)
        .map_err(io(&finished.dir.join("transcript.txt")))?;
    // The file name only: the header must not change with the directory `check` runs from.
    let expression = s.path.file_name().map_or_else(
        || s.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let comparison =
        snapshot::compare(&snap, &expression, &text, opts.update).map_err(io(&snap))?;
    let (changes, diff) = match &comparison {
        Comparison::Drift { summary, diff } => (Some(summary.clone()), Some(diff.clone())),
        _ => (None, None),
    };
    finished.summary.set_snapshot(SnapshotResult {
        path: snap.display().to_string(),
        status: comparison.label().into(),
        changes,
        diff,
    });
    finished
        .summary
        .write(&finished.dir)
        .map_err(io(&finished.dir))?;
    Ok(Checked {
        finished,
        snapshot: snap,
        comparison: Some(comparison),
    })
}

fn transcript_of(s: &Scenario, sampled: &[Vec<u64>], f: &Finished) -> String {
    let empty = transcript::ClassObservations::default();
    let observed = f.metrics.observations.as_deref().unwrap_or_default();
    let sizes = s.population_sizes();
    let classes: Vec<ClassTranscript<'_>> = s
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ns = &sampled[i];
            let id = |n: Option<&u64>| n.map(|n| c.template.render(*n)).unwrap_or_default();
            ClassTranscript {
                name: &c.name,
                population: sizes[i],
                sampled: (id(ns.first()), id(ns.last())),
                observed: observed.get(i).unwrap_or(&empty),
            }
        })
        .collect();
    let how = match s.check.sample {
        Some(k) => format!("up to {k} devices per class, spread evenly over each class's range"),
        None => "every device of every class".to_owned(),
    };
    let exchange = match s.target.mode {
        crate::scenario::Mode::Webhook => transcript::Exchange::Webhook,
        _ => transcript::Exchange::Device,
    };
    transcript::render(&s.name, &how, exchange, &classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_spread_and_includes_ends() {
        let text = "name = \"t\"\n[enrollment]\ngroup_id = \"g\"\nprimary_key = \"oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==\"\niot_hubs = [\"h\"]\n[[devices]]\nclass = \"a\"\nid = \"d{n}\"\ncount = 100\nexpect = { status = \"assigned\" }\n[[devices]]\nclass = \"b\"\nid = \"e{n}\"\ncount = 3\nexpect = { status = \"assigned\" }\n[check]\nsample = 5\n";
        let s = Scenario::parse(Path::new("t.toml"), text).unwrap();
        let got = sample(&s);
        assert_eq!(got[0], vec![1, 25, 50, 75, 100]);
        assert_eq!(got[1], vec![1, 2, 3]);
    }
}
