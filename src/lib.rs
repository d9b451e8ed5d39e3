//! `loadtest`: load and conformance testing of Azure IoT DPS custom allocation.
//!
//! # Layout
//!
//! * `cli`: command-line parsing, dispatch and exit codes (the only place that uses `anyhow`).
//! * `run`: one scenario end to end: overrides, embedded webhook, engine, report.
//! * `scenario`: TOML scenarios, loaded raw then validated into typed values.
//! * `device`: the synthetic population, registration-ID templates and key derivation.
//! * `sas`: SAS tokens (build, parse, verify), pure.
//! * `dps`: DPS protocol facts: statuses, error codes, the custom-allocation wire format and the
//!   outcome rules every driver (and the emulator) applies to a webhook answer.
//! * `emulator`: the DPS emulator (MQTT/TLS, HTTPS, allocation, registration store, hubs and twins).
//! * `webhook`: the reference webhook (the seed functions, fault injection, HTTP server).
//! * `pacing`: the open-loop schedule of intended send instants, pure.
//! * `driver`: the load engine (open/closed loop, stop handling) and the executors (webhook).
//! * `check`: expectations compared with outcomes.
//! * `threshold`: k6-style pass/fail criteria on the final histograms and counters.
//! * `conformance`: `loadtest check`: the normalised transcript, its snapshot and the diff.
//! * `metrics`: HdrHistograms and counters, folded by one collector.
//! * `progress`: the live progress line.
//! * `report`: the summary model and its writers (JSON, text).
//!
//! Dependency direction: `dps`, `sas`, `device`, `scenario`, `pacing`, `check` are pure; `driver`
//! and `webhook::server` use them; `report` reads `metrics` and the scenario.

pub mod capacity;
pub mod check;
pub mod cli;
pub mod conformance;
pub mod device;
pub mod dps;
pub mod driver;
pub mod emulator;
pub mod metrics;
pub mod pacing;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod sas;
pub mod scenario;
pub mod secret;
pub mod threshold;
pub mod webhook;
