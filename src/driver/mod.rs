//! The load engine shared by every driver: it decides *when* each request starts, hands it to an
//! [`Executor`] (which decides *what* a request is), and folds the results into [`Metrics`].
//!
//! - Open loop: request `k` is due at `start + schedule.offset(k)`. At
//!   most `max_in_flight` requests run at once; beyond that the pacer waits, and the wait shows up
//!   as schedule lag, never as a silently dropped request (wrk2's queue + intended-start timing).
//!   The pacer sleeps on its own thread (see [`pace_open`] for why), waking at most once per
//!   `granularity` (then releasing every request that fell due); requests run on the plan's
//!   lanes round-robin when it has any.
//! - Closed loop (`rate = "max"`): `connections` workers send back to back; intended = send.
//!
//! Stopping (end of schedule, Ctrl-C, `--duration`): scheduling stops, in-flight requests get
//! `grace` to finish, and whatever is still running then is counted as timed out. Every
//! scheduled request ends up in exactly one of completed / failed / timed out / not sent.

pub(crate) mod device;
mod inflight;
pub(crate) mod webhook;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use bytes::Bytes;

use crate::check::Mismatch;
use crate::device::{Device, Population};
use crate::dps::Registration;
use crate::metrics::{End, Metrics, Phases, Sample};
use crate::outcome::Failure;
use crate::pacing::Schedule;
use crate::progress::Progress;
use crate::transcript::Observation;
use inflight::InFlight;

/// One request to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Request number.
    pub index: u64,
    /// Which device.
    pub device: Device,
    /// When it should have started.
    pub intended: Instant,
    /// The lane it runs on (0 without lanes): executors with per-lane state (an endpoint per
    /// lane of the embedded emulator) pick theirs by it.
    pub lane: usize,
}

/// What an executor learned about one request; [`Ended::sample`] turns it into the engine's
/// [`Sample`] (one copy of that mapping for every executor).
#[derive(Debug)]
pub(crate) struct Ended {
    /// The registration ID.
    pub id: String,
    /// What DPS reports to the device.
    pub registration: Registration,
    /// How the last attempt ended.
    pub end: End,
    /// Why no answer came, if so.
    pub error: Option<Failure>,
    /// Requests on the wire (webhook calls, or register + polls + retries).
    pub attempts: u32,
    /// The expectation's differing fields.
    pub mismatches: Vec<Mismatch>,
    /// The last request body sent, if any (conformance transcripts).
    pub request: Option<Bytes>,
    /// The last answer (status, body), if any (conformance transcripts).
    pub response: Option<(u16, Bytes)>,
    /// Per-phase timings (device modes; their 429s are in `phases.throttled`).
    pub phases: Option<Phases>,
    /// Webhook mode: answers that were 429.
    pub throttled: u32,
}

impl Ended {
    /// The sample of `job`, sent at `sent`, done at `done`; `observe` keeps the exchange.
    pub(crate) fn sample(self, job: &Job, sent: Instant, done: Instant, observe: bool) -> Sample {
        let mut s = Sample::timed(job.device.class, job.intended, sent, done);
        s.end = self.end;
        s.outcome = self.registration.key();
        s.attempts = self.attempts;
        s.throttled = self.throttled + self.phases.as_ref().map_or(0, |p| p.throttled);
        if observe {
            s.extra_mut().observed = Some(Box::new(Observation {
                registration_id: self.id.clone(),
                registration: self.registration.clone(),
                request: self.request,
                response: self.response,
                attempts: self.attempts,
            }));
        }
        if !self.mismatches.is_empty() {
            s.extra_mut().mismatch = Some((self.id, self.mismatches));
        }
        if self.error.is_some() {
            s.extra_mut().error = self.error;
        }
        if let Some(p) = self.phases {
            s.extra_mut().phases = Some(p);
        }
        s.hub = self.registration.assigned_hub;
        s
    }
}

/// Runs one request end to end and reports what happened.
pub(crate) trait Executor: Send + Sync + 'static {
    /// Executes a job handed over at `sent` (the start of its service time; closed loop: when
    /// the worker's previous request ended); never panics on target misbehaviour.
    fn execute(&self, job: Job, sent: Instant) -> impl Future<Output = Sample> + Send;

    /// The sample of a job still unanswered when the grace period ended: timed out at `done`,
    /// its class's expectation unmet (wrk2 records such requests at their elapsed time too).
    fn abandoned(&self, job: &Job, sent: Instant, done: Instant) -> Sample;
}

/// The sample of an abandoned job, given the expectation it did not meet.
pub(crate) fn abandoned_sample(
    job: &Job,
    id: String,
    expect: &crate::check::Expect,
    sent: Instant,
    done: Instant,
) -> Sample {
    let registration = Registration::default();
    Ended {
        id,
        mismatches: crate::check::compare(expect, &registration),
        registration,
        end: End::TimedOut,
        error: Some(Failure::new(
            End::TimedOut,
            crate::outcome::Source::Timeout,
            "no answer when the grace period ended (abandoned)",
        )),
        attempts: 1,
        request: None,
        response: None,
        phases: None,
        throttled: 0,
    }
    .sample(job, sent, done, false)
}

/// How requests are started.
#[derive(Debug, Clone)]
pub(crate) enum Pacing {
    /// Open loop on a schedule.
    Open(Schedule),
    /// Closed loop.
    Closed {
        /// Concurrent workers.
        workers: u32,
        /// Stop after this long.
        duration: Option<Duration>,
        /// Stop after this many requests.
        count: Option<u64>,
    },
}

/// Engine parameters.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Open or closed loop.
    pub pacing: Pacing,
    /// Open loop: maximum requests in flight.
    pub max_in_flight: u32,
    /// Time given to in-flight requests after scheduling stops.
    pub grace: Duration,
    /// Mismatch examples kept per class and field.
    pub examples: usize,
    /// Keep what each request showed (conformance transcripts).
    pub observe: bool,
    /// Checked on every progress tick; a reason stops the run early (`abort_on_fail`).
    pub watch: Option<Watch>,
    /// Class names: keep a per-second interval log (`latency.hlog`) tagged with them.
    pub interval_log: Option<Vec<String>>,
    /// The schedule's zero (`--start-at`, possibly in the past); default: now plus a short lead.
    pub origin: Option<Instant>,
    /// Open loop: the pacer wakes at most this often (0 = at each request's intended start).
    pub granularity: Duration,
    /// Runtimes requests run on, round-robin (request `k` on lane `k mod n`; closed-loop worker
    /// `w` on lane `w mod n`); empty: the caller's runtime.
    pub lanes: Vec<tokio::runtime::Handle>,
}

/// An early-stop check: given the metrics so far and the number of requests still to come
/// (`None` = unknown), the reason to stop, if any.
#[derive(Clone)]
pub(crate) struct Watch(pub Arc<WatchFn>);

/// The function inside a [`Watch`].
pub(crate) type WatchFn = dyn Fn(&Metrics, Option<u64>) -> Option<String> + Send + Sync;

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Stop requests: 1 = stop scheduling (graceful), 2 = abandon in-flight requests too.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    tx: Arc<watch::Sender<u8>>,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
        }
    }
}

impl Stop {
    /// Requests a stop; a second request abandons in-flight work.
    pub(crate) fn request(&self) {
        self.tx.send_modify(|v| *v = (*v + 1).min(2));
    }

    /// Current level.
    pub(crate) fn level(&self) -> u8 {
        *self.tx.borrow()
    }

    /// Resolves once a stop is requested.
    pub(crate) async fn requested(&self) {
        self.reached(1).await;
    }

    async fn reached(&self, level: u8) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v >= level).await;
    }
}

/// What the engine measured.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Everything recorded.
    pub metrics: Metrics,
    /// Requests the run intended to make.
    pub scheduled: u64,
    /// Requests handed to the executor.
    pub sent: u64,
    /// Sent but unfinished when the grace period ended (counted as timed out).
    pub abandoned: u64,
    /// Stopped early by the user.
    pub interrupted: bool,
    /// Stopped early by a [`Watch`], with its reason.
    pub aborted: Option<String>,
    /// From the start to the end of measurement.
    pub elapsed: Duration,
}

impl Outcome {
    /// Scheduled but never sent.
    pub(crate) fn not_sent(&self) -> u64 {
        self.scheduled.saturating_sub(self.sent)
    }
}

/// Runs a plan to completion (or until stopped).
pub(crate) async fn run<E: Executor>(
    exec: Arc<E>,
    population: Arc<Population>,
    plan: Plan,
    classes: usize,
    stop: Stop,
    progress: Progress,
) -> Outcome {
    // A short lead so set-up work (spawning, first connections) is not charged to request 0.
    let start = plan
        .origin
        .unwrap_or_else(|| Instant::now() + Duration::from_millis(5));
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let inflight = Arc::new(match &plan.pacing {
        Pacing::Open(_) => InFlight::keyed(plan.lanes.len()),
        Pacing::Closed { workers, .. } => InFlight::slots(*workers as usize, plan.lanes.len()),
    });
    let mut metrics = Metrics::new(classes, start, plan.examples, plan.observe);
    metrics.intervals = plan
        .interval_log
        .as_deref()
        .map(crate::metrics::intervals::IntervalLog::new);
    let total = match &plan.pacing {
        Pacing::Open(schedule) => Some(schedule.total()),
        Pacing::Closed { count, .. } => *count,
    };
    let watch = plan.watch.clone().map(|w| (w, total, stop.clone()));
    let sent = Arc::new(AtomicU64::new(0));
    let sent_seen = sent.clone();
    let finished = inflight.clone();
    let collector = tokio::spawn(async move {
        let aborted = collect(
            &mut metrics,
            &finished,
            finish_rx,
            progress,
            watch,
            sent_seen,
        )
        .await;
        (metrics, aborted)
    });
    let scheduled = match &plan.pacing {
        Pacing::Open(schedule) => {
            let sem = Arc::new(Semaphore::new(plan.max_in_flight as usize));
            pace_open(
                &exec,
                &population,
                schedule,
                start,
                &sem,
                &sent,
                &stop,
                &inflight,
                &plan.lanes,
                plan.granularity,
            )
            .await;
            let limit = plan.max_in_flight as usize;
            // Whatever is still in flight after this is counted as abandoned (timed out) below.
            wait_drained(plan.grace, &stop, || sem.available_permits() == limit).await;
            schedule.total()
        }
        Pacing::Closed {
            workers,
            duration,
            count,
        } => {
            let deadline = duration.map(|d| start + d);
            let mut set = tokio::task::JoinSet::new();
            let next = Arc::new(AtomicU64::new(0));
            let stopped = Arc::new(AtomicBool::new(false));
            for w in 0..*workers as usize {
                let lane = if plan.lanes.is_empty() {
                    0
                } else {
                    w % plan.lanes.len()
                };
                let (exec, pop, next, sent, stopped, count, inflight) = (
                    exec.clone(),
                    population.clone(),
                    next.clone(),
                    sent.clone(),
                    stopped.clone(),
                    *count,
                    inflight.clone(),
                );
                let worker = async move {
                    tokio::time::sleep_until(start).await;
                    let mut last_done = None;
                    loop {
                        // A request starts when the previous one ended: one clock read per
                        // request (its end) serves the deadline check and the next one's start.
                        let now = last_done.take().unwrap_or_else(Instant::now);
                        if stopped.load(Ordering::Relaxed) || deadline.is_some_and(|d| now >= d) {
                            break;
                        }
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if count.is_some_and(|c| k >= c) {
                            break;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        let job = Job {
                            index: k,
                            device: pop.device(k),
                            intended: now,
                            lane,
                        };
                        inflight.start(w, job, now);
                        let sample = exec.execute(job, now).await;
                        last_done = Some(sample.done);
                        inflight.finish(w, &job, sample);
                    }
                };
                match plan.lanes.get(lane) {
                    Some(h) => set.spawn_on(worker, h),
                    None => set.spawn(worker),
                };
            }
            {
                let workers_done = async { while set.join_next().await.is_some() {} };
                tokio::pin!(workers_done);
                tokio::select! {
                    () = &mut workers_done => {}
                    () = stop.reached(1) => {
                        stopped.store(true, Ordering::Relaxed);
                        wait_drained_fut(plan.grace, &stop, &mut workers_done).await;
                    }
                }
            }
            set.abort_all();
            let sent_now = sent.load(Ordering::Relaxed);
            count.unwrap_or(sent_now).max(sent_now)
        }
    };
    // What is still running now is abandoned: recorded as timed out at this instant, exactly once.
    let now = Instant::now();
    let abandoned_jobs = inflight.abandon_all();
    let abandoned = abandoned_jobs.len() as u64;
    for (job, first_send) in abandoned_jobs {
        inflight.push(job.lane, exec.abandoned(&job, first_send, now));
    }
    let _ = finish_tx.send(());
    let (metrics, aborted) = collector.await.expect("collector task does not panic");
    let sent = sent.load(Ordering::Relaxed);
    let end = metrics.last_done.unwrap_or(start).max(start);
    Outcome {
        abandoned,
        elapsed: end - start,
        metrics,
        scheduled,
        sent,
        interrupted: stop.level() > 0 && aborted.is_none(),
        aborted,
    }
}

/// The open-loop pacer. It runs on a blocking-pool thread and sleeps with `std::thread::sleep`
/// (nanosleep, ~50-100 µs late) because tokio's timer has 1 ms resolution: sleeping on it adds up
/// to 1 ms of schedule lag, and spinning on `yield_now` instead burns a core the target may need.
#[allow(clippy::too_many_arguments)]
async fn pace_open<E: Executor>(
    exec: &Arc<E>,
    population: &Arc<Population>,
    schedule: &Schedule,
    start: Instant,
    sem: &Arc<Semaphore>,
    sent: &Arc<AtomicU64>,
    stop: &Stop,
    inflight: &Arc<InFlight>,
    lanes: &[tokio::runtime::Handle],
    granularity: Duration,
) {
    let lanes = lanes.to_vec();
    let (exec, population, schedule, sem, sent, stop, inflight) = (
        exec.clone(),
        population.clone(),
        schedule.clone(),
        sem.clone(),
        sent.clone(),
        stop.clone(),
        inflight.clone(),
    );
    let handle = tokio::runtime::Handle::current();
    let pacer = tokio::task::spawn_blocking(move || {
        let start_std = start.into_std();
        let mut k = 0u64;
        // When the pacer last woke from a sleep: with a granularity it wakes at most that often,
        // releasing together every request that fell due meanwhile (late by less than the
        // granularity, which the lag histogram shows). Each wake costs a context switch here and
        // one on the lane it hands work to: at thousands of requests a second on 2 cores that
        // was a quarter of the CPU per device registration (benches/devices.sh).
        let mut woke: Option<std::time::Instant> = None;
        while let Some(offset) = schedule.offset(k) {
            let intended_std = start_std + offset;
            let release_at = match woke {
                Some(w) if !granularity.is_zero() => intended_std.max(w + granularity),
                _ => intended_std,
            };
            if std::time::Instant::now() < intended_std {
                loop {
                    if stop.level() > 0 {
                        return;
                    }
                    let now = std::time::Instant::now();
                    if now >= release_at {
                        break;
                    }
                    // Sleep in slices so a stop request is noticed within 50 ms at low rates.
                    std::thread::sleep((release_at - now).min(Duration::from_millis(50)));
                    woke = Some(std::time::Instant::now());
                }
            } else if stop.level() > 0 {
                return;
            }
            let permit = match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let acquired = handle.block_on(async {
                        tokio::select! {
                            p = sem.clone().acquire_owned() => p.ok(),
                            () = stop.reached(1) => None,
                        }
                    });
                    match acquired {
                        Some(p) => p,
                        None => return,
                    }
                }
            };
            sent.fetch_add(1, Ordering::Relaxed);
            let (exec, device) = (exec.clone(), population.device(k));
            let intended = Instant::from_std(intended_std);
            let lane = if lanes.is_empty() {
                0
            } else {
                (k % lanes.len() as u64) as usize
            };
            let job = Job {
                index: k,
                device,
                intended,
                lane,
            };
            inflight.start(0, job, Instant::now());
            let inflight = inflight.clone();
            lanes.get(lane).unwrap_or(&handle).spawn(async move {
                // Boxed, so that the spawn moves a pointer, not the ~4 KB registration future.
                let sample = Box::pin(exec.execute(job, Instant::now())).await;
                inflight.finish(0, &job, sample);
                drop(permit);
            });
            k += 1;
        }
    });
    let _ = pacer.await;
}

/// Waits until `drained()` holds, `grace` passes, or a second stop request arrives.
async fn wait_drained(grace: Duration, stop: &Stop, drained: impl Fn() -> bool) {
    let poll = async {
        while !drained() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    wait_drained_fut(grace, stop, poll).await;
}

async fn wait_drained_fut(grace: Duration, stop: &Stop, fut: impl Future<Output = ()>) {
    tokio::select! {
        _ = tokio::time::timeout(grace, fut) => {}
        () = stop.reached(2) => {}
    }
}

async fn collect(
    metrics: &mut Metrics,
    finished: &InFlight,
    mut finish: tokio::sync::oneshot::Receiver<()>,
    progress: Progress,
    watch: Option<(Watch, Option<u64>, Stop)>,
    sent: Arc<AtomicU64>,
) -> Option<String> {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // Finished samples are taken every 10 ms rather than awaited one by one: waiting for each
    // would wake this task from the lanes' threads per request (an eventfd write and a context
    // switch on a busy core); nothing is timed here, so the delay costs no accuracy.
    let mut drain = tokio::time::interval(Duration::from_millis(10));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spare = Vec::new();
    let mut aborted = None;
    loop {
        tokio::select! {
            biased;
            _ = &mut finish => {
                // Every request is in by now: finished, or abandoned by the engine.
                finished.drain(&mut spare, |s| metrics.record(s));
                break;
            }
            _ = tick.tick() => {
                let in_flight = sent.load(Ordering::Relaxed).saturating_sub(metrics.samples);
                progress.update(metrics, in_flight);
                if let (None, Some((w, total, stop))) = (&aborted, &watch) {
                    let remaining = total.map(|t| t.saturating_sub(metrics.samples));
                    if let Some(why) = (w.0)(metrics, remaining) {
                        aborted = Some(why);
                        stop.request();
                    }
                }
            }
            _ = drain.tick() => finished.drain(&mut spare, |s| metrics.record(s)),
        }
    }
    progress.finish();
    aborted
}
