//! Lanes: single-threaded tokio runtimes, each on its own OS thread, for connection-per-device
//! load. A request and, with the embedded emulator, the server end of its connection run on the
//! same lane, so neither end is woken from another thread: on 2 cores that cost about a quarter
//! of the CPU per registration in a work-stealing runtime (benches/devices.sh). The engine
//! decides what runs where; this file only starts and stops the runtimes.

use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How often a lane's own timer fires. tokio wakes a runtime's driver (an eventfd write)
/// whenever a timer is registered earlier than the driver's next wake, and it cannot tell that
/// the driver is its own thread, running: a lane with no timer pending (every registration on it
/// done) paid that write for each timer the next registration set (connect, device timeout,
/// keep-alive), about 2.9 writes per registration at 6,000/s. A timer always due within
/// `BEAT` keeps later ones from counting as earliest; it costs four wakes a second.
const BEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// Running lanes; dropping them stops their runtimes (tasks still on them are dropped).
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Lanes {
    /// Starts `n` lanes (none for 0).
    pub(crate) fn start(n: usize) -> io::Result<Self> {
        let mut lanes = Self::default();
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            lanes.handles.push(rt.handle().clone());
            let (tx, mut rx) = oneshot::channel::<()>();
            lanes.stops.push(tx);
            std::thread::Builder::new()
                .name(format!("lane-{i}"))
                .spawn(move || {
                    rt.block_on(async {
                        let mut beat = tokio::time::interval(BEAT);
                        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        loop {
                            tokio::select! {
                                _ = &mut rx => break,
                                _ = beat.tick() => {}
                            }
                        }
                    });
                    rt.shutdown_background();
                })?;
        }
        Ok(lanes)
    }

    /// The lanes' runtimes, in lane order.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The default number of lanes: one per core the process may use.
    pub(crate) fn per_core() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for tx in self.stops.drain(..) {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lane_is_one_thread_of_its_own() {
        let lanes = Lanes::start(2).unwrap();
        let names: Vec<String> = lanes
            .handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_owned));
                });
                rx.recv().unwrap().unwrap()
            })
            .collect();
        assert_eq!(names, ["lane-0", "lane-1"]);
        drop(lanes);
    }
}
