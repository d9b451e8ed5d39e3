//! Which requests are in flight, so that each is recorded exactly once when a run stops: by
//! its task, or by the engine as abandoned. Only bookkeeping; the engine decides what to do.

use tokio::time::Instant;

use super::Job;

/// Requests handed to the executor and not yet finished, so that those still running when the
/// grace period ends are recorded exactly once: by the engine as abandoned, or by their task.
/// Open loop: by request number; closed loop: one slot per worker (a worker runs one request at
/// a time, and a slot's lock is never contended, unlike one map for every request).
#[derive(Debug)]
pub(super) enum InFlight {
    Keyed(std::sync::Mutex<foldhash::HashMap<u64, (Job, Instant)>>),
    Slots(Vec<std::sync::Mutex<Option<(Job, Instant)>>>),
}

impl InFlight {
    pub(super) fn keyed() -> Self {
        Self::Keyed(std::sync::Mutex::default())
    }

    pub(super) fn slots(workers: usize) -> Self {
        Self::Slots((0..workers).map(|_| std::sync::Mutex::new(None)).collect())
    }

    /// `slot`: the worker (closed loop; ignored in the open loop).
    pub(super) fn start(&self, slot: usize, job: Job, sent: Instant) {
        match self {
            Self::Keyed(m) => {
                m.lock()
                    .expect("in-flight lock")
                    .insert(job.index, (job, sent));
            }
            Self::Slots(s) => *s[slot].lock().expect("in-flight lock") = Some((job, sent)),
        }
    }

    /// True when the job was still owned by its task (its sample is to be sent).
    pub(super) fn finish(&self, slot: usize, index: u64) -> bool {
        match self {
            Self::Keyed(m) => m.lock().expect("in-flight lock").remove(&index).is_some(),
            Self::Slots(s) => s[slot]
                .lock()
                .expect("in-flight lock")
                .take_if(|(j, _)| j.index == index)
                .is_some(),
        }
    }

    /// Takes every job still running: from now on their tasks' samples are dropped.
    pub(super) fn abandon_all(&self) -> Vec<(Job, Instant)> {
        match self {
            Self::Keyed(m) => m
                .lock()
                .expect("in-flight lock")
                .drain()
                .map(|(_, v)| v)
                .collect(),
            Self::Slots(s) => s
                .iter()
                .filter_map(|slot| slot.lock().expect("in-flight lock").take())
                .collect(),
        }
    }
}
