//! Which requests are in flight, and the samples of those that finished, so that each request
//! is recorded exactly once when a run stops: by its task, or by the engine as abandoned. Only
//! bookkeeping; the engine decides what to do and the collector what a sample means.

use std::sync::Mutex;

use tokio::time::Instant;

use super::Job;
use crate::metrics::Sample;

/// Requests handed to the executor and not yet finished, so that those still running when the
/// grace period ends are recorded exactly once: by the engine as abandoned, or by their task.
/// Open loop: by request number; closed loop: one slot per worker (a worker runs one request at
/// a time, and a slot's lock is never contended, unlike one map for every request).
///
/// Finished samples wait here, per lane, until the collector takes them (every 10 ms) rather
/// than going through a channel one by one: a lane is one thread, so its list is in completion
/// order, and an uncontended lock and a push cost less than a channel's send and receive (840
/// of 11,200 instructions per webhook request, benches/vs-wrk.sh). A sample is pushed while its
/// running entry is still locked, so once [`InFlight::abandon_all`] returns, every request is
/// either abandoned or already in a list.
#[derive(Debug)]
pub(super) struct InFlight {
    running: Running,
    finished: Vec<Mutex<Vec<Sample>>>,
}

#[derive(Debug)]
enum Running {
    Keyed(Mutex<foldhash::HashMap<u64, (Job, Instant)>>),
    Slots(Vec<Mutex<Option<(Job, Instant)>>>),
}

impl InFlight {
    /// By request number (open loop), finished samples kept per lane (`lanes` at least 1).
    pub(super) fn keyed(lanes: usize) -> Self {
        Self::new(Running::Keyed(Mutex::default()), lanes)
    }

    /// One slot per worker (closed loop).
    pub(super) fn slots(workers: usize, lanes: usize) -> Self {
        Self::new(
            Running::Slots((0..workers).map(|_| Mutex::new(None)).collect()),
            lanes,
        )
    }

    fn new(running: Running, lanes: usize) -> Self {
        Self {
            running,
            finished: (0..lanes.max(1)).map(|_| Mutex::default()).collect(),
        }
    }

    /// `slot`: the worker (closed loop; ignored in the open loop).
    pub(super) fn start(&self, slot: usize, job: Job, sent: Instant) {
        match &self.running {
            Running::Keyed(m) => {
                m.lock()
                    .expect("in-flight lock")
                    .insert(job.index, (job, sent));
            }
            Running::Slots(s) => *s[slot].lock().expect("in-flight lock") = Some((job, sent)),
        }
    }

    /// Keeps `sample` as `job`'s result when the job is still owned by its task; drops it when
    /// the engine has abandoned the job meanwhile (it is recorded as timed out instead).
    pub(super) fn finish(&self, slot: usize, job: &Job, sample: Sample) {
        match &self.running {
            Running::Keyed(m) => {
                let mut running = m.lock().expect("in-flight lock");
                if running.remove(&job.index).is_some() {
                    self.push(job.lane, sample);
                }
            }
            Running::Slots(s) => {
                let mut running = s[slot].lock().expect("in-flight lock");
                if running.take_if(|(j, _)| j.index == job.index).is_some() {
                    self.push(job.lane, sample);
                }
            }
        }
    }

    /// Keeps a sample the engine made itself (an abandoned request's).
    pub(super) fn push(&self, lane: usize, sample: Sample) {
        let list = &self.finished[lane % self.finished.len()];
        list.lock().expect("finished lock").push(sample);
    }

    /// Hands every finished sample to `record`, in completion order (the lanes' lists merged by
    /// completion time). `spare` holds one emptied list per lane between calls, so that the
    /// lists keep their capacity.
    pub(super) fn drain(&self, spare: &mut Vec<Vec<Sample>>, mut record: impl FnMut(Sample)) {
        spare.resize_with(self.finished.len(), Vec::new);
        for (list, mine) in self.finished.iter().zip(spare.iter_mut()) {
            std::mem::swap(&mut *list.lock().expect("finished lock"), mine);
        }
        if let [one] = spare.as_mut_slice() {
            one.drain(..).for_each(record);
            return;
        }
        let mut lists: Vec<_> = spare.iter_mut().map(|l| l.drain(..).peekable()).collect();
        loop {
            let next = lists
                .iter_mut()
                .enumerate()
                .filter_map(|(i, l)| l.peek().map(|s| (s.done, i)))
                .min();
            match next.and_then(|(_, i)| lists[i].next()) {
                Some(s) => record(s),
                None => break,
            }
        }
    }

    /// Takes every job still running: from now on their tasks' samples are dropped.
    pub(super) fn abandon_all(&self) -> Vec<(Job, Instant)> {
        match &self.running {
            Running::Keyed(m) => m
                .lock()
                .expect("in-flight lock")
                .drain()
                .map(|(_, v)| v)
                .collect(),
            Running::Slots(s) => s
                .iter()
                .filter_map(|slot| slot.lock().expect("in-flight lock").take())
                .collect(),
        }
    }
}
