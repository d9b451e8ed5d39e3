//! `loadtest`: load and conformance testing of Azure IoT DPS custom allocation.
//!
//! # Layout
//!
//! Layers, top to bottom. A module imports only modules on lower lines; modules on one line are
//! siblings and import neither each other nor anything above (`tests/layers.rs` reads every
//! `crate::` path in `src/` and fails on an import that goes up or sideways, naming the file).
//!
//! 1. `cli`: command-line parsing, dispatch and exit codes (the only place that uses `anyhow`).
//! 2. `plan`, `conformance`, `lifecycle`: the capacity search (`loadtest plan`), the conformance
//!    gate (`loadtest check`: transcript, snapshot, diff), both built on `run`, and a load test's
//!    set-up and clean-up against the DPS service and IoT Hub registry APIs.
//! 3. `run`: one scenario end to end: overrides, embedded webhook, engine, report.
//! 4. `report`: the summary model and its writers (JSON, text, Markdown, HTML, JUnit, HdrHistogram
//!    logs) and `report merge`.
//! 5. `driver`, `emulator`: the load engine (open/closed loop, stop handling) and its executors
//!    (webhook, MQTT and HTTPS devices); the DPS emulator (MQTT/TLS, HTTPS, allocation,
//!    registration store, hubs and twins). Neither imports the other: `run` wires them.
//! 6. `scenario`: TOML scenarios, loaded raw then validated into typed values.
//! 7. `webhook`: the reference webhook (the seed functions, fault injection, HTTP server) and the
//!    DPS-side webhook client.
//! 8. `progress`: the live views: the progress line, `--ndjson`, the Prometheus endpoint.
//! 9. `threshold`: k6-style pass/fail criteria on the final histograms and counters.
//! 10. `metrics`: HdrHistograms and counters, folded by one collector.
//! 11. `transcript`: what each class showed, reduced to the normalised conformance transcript.
//! 12. `check`, `simulate`: expectations and their comparison with outcomes; the onboarding-storm
//!     simulation (a fluid model of devices retrying against DPS's limits, no sockets).
//! 13. `dps`: DPS protocol facts: statuses, error codes, wire formats, enrollment resolution and
//!     the outcome rules every driver and the emulator apply.
//! 14. `sas`: SAS tokens (build, parse, verify), pure.
//! 15. `device`, `pacing`, `secret`, `capacity`, `outcome`: the synthetic population and key
//!     derivation; the open-loop schedule; the redacted secret string; the DPS and IoT Hub quota
//!     arithmetic; how a request ended and where a failure came from.
//! 16. `lanes`, `listen`, `dial`, `tls`, `mqtt`, `ws`: the I/O helpers: single-threaded
//!     runtimes, one per core; accepting connections with limits; opening them from spread source
//!     addresses; server certificates (a generated development CA or the user's PEM files) and
//!     extra client trust anchors; MQTT packets over a byte stream; that byte stream over a
//!     WebSocket (`/$iothub/websocket`, subprotocol `mqtt`).
//!
//! # Public surface
//!
//! `cli` (the binary's entry point), and what the integration tests, benches and fuzz targets
//! drive directly: `check`, `device`, `dps`, `emulator`, `sas`, `scenario`. Everything else is
//! `pub(crate)`: it is reached through the CLI, not as a library API.

pub(crate) mod capacity;
pub mod check;
pub mod cli;
pub(crate) mod conformance;
pub mod device;
pub(crate) mod dial;
pub mod dps;
pub(crate) mod driver;
pub mod emulator;
pub(crate) mod lanes;
pub(crate) mod lifecycle;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod mqtt;
pub(crate) mod outcome;
pub(crate) mod pacing;
pub(crate) mod plan;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod run;
pub mod sas;
pub mod scenario;
pub(crate) mod secret;
pub(crate) mod simulate;
pub(crate) mod threshold;
pub mod tls;
pub(crate) mod transcript;
pub(crate) mod webhook;
pub mod ws;
