//! The registration store: each registration's record and its operations as the emulator keeps
//! them in memory (under the emulator's one lock), and their optional persistence
//! (`[emulator] persist = "file.json"`): every terminal registration rewrites the file atomically
//! (write a temporary file, then rename), so a crash leaves either the old or the new file, never
//! a torn one. Loaded once at start. Must not: decide anything (the emulator's core does).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::hub::Hub;
use super::shards::Sharded;
use crate::dps::wire::RegistrationState;

/// One registration as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub state: RegistrationState,
    /// The last assignment (hub, device ID), kept through later failures for reprovisioning.
    pub assigned: Option<(String, String)>,
    /// Key that first succeeded: false = primary.
    pub secondary: Option<bool>,
}

pub(super) enum OpState {
    Running,
    /// Finished: the answer is the registration's stored state.
    Done,
}

pub(super) struct Operation {
    pub registration_lc: String,
    pub state: OpState,
    pub polls: VecDeque<Instant>,
}

#[derive(Default)]
pub(super) struct State {
    pub registrations: Sharded<Record>,
    pub operations: Sharded<Operation>,
    /// Finished operations in completion order, forgotten after [`OPERATION_RETENTION`].
    pub finished: VecDeque<(Instant, String)>,
    pub registrations_window: VecDeque<Instant>,
}

/// How long a finished operation can still be polled (our choice; DPS's is UNCONFIRMED; SDKs
/// poll within seconds). Keeps memory flat under load.
pub const OPERATION_RETENTION: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
pub(super) struct Saved {
    pub registrations: Sharded<Record>,
    pub hubs: HashMap<String, Hub>,
}

/// Reads the store; `None` when the file does not exist yet.
pub(super) fn load(path: &Path) -> Result<Option<Saved>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a registration store: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the store atomically, with the state `snapshot` takes while this writer holds the lock:
/// of two concurrent saves, the later one always writes the later state (a snapshot taken before
/// the lock could land after a newer one and undo it).
pub(super) fn save(
    path: &Path,
    snapshot: impl FnOnce() -> (Sharded<Record>, HashMap<String, Hub>),
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct Ref<'a> {
        registrations: &'a Sharded<Record>,
        hubs: &'a HashMap<String, Hub>,
    }
    // One writer at a time: concurrent allocations would otherwise share the temporary file.
    static WRITER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (registrations, hubs) = snapshot();
    let bytes = serde_json::to_vec(&Ref {
        registrations: &registrations,
        hubs: &hubs,
    })
    .expect("the store serialises");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
