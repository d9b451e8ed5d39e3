//! All integration tests, one binary (ripgrep's layout): each module is one area.

#![allow(unreachable_pub)]

// Shared helpers: run the binary, start the reference webhook as a separate process.
mod util;

// `loadtest keys`: seed vectors and CSV export.
mod keys;
// `loadtest run` in webhook mode against the embedded and an external webhook.
mod webhook_mode;
// Errors, interruption and accounting.
mod robustness;
// `loadtest check`: transcripts, snapshots, drift diffs.
mod conformance;
// Thresholds and exit code 99.
mod thresholds;
// JUnit XML validation (used by the modules above).
mod junit;
// The DPS emulator: MQTT with a raw client, HTTPS and the twin API, Azure's Python SDK.
mod dps_https;
mod dps_mqtt;
mod dps_sdk;
// Device registrations over MQTT and HTTPS (the drivers), end to end.
mod devices;
// Admission control: a busy emulator answers 429 + retry-after, counted on both sides.
mod admission;
// Sharded runs and `report merge`.
mod shards;
// The mode matrix: webhook, mqtt and https apply the same DPS rules.
mod modes;
// The module layers of lib.rs: imports only go down.
mod layers;
// Servers under slow clients: header-read timeouts, connection limits.
mod hardening;
// The scenario loader under thousands of seeded mutations.
mod scenario_fuzz;
// Capacity planning: the knee search and report.html.
mod capacity;

mod cli_docs;
// `run --metrics-addr`: the /metrics endpoint, read directly and by a real Prometheus.
mod metrics;
// The live console: the multi-line view under a pseudo-terminal, the 10 s line elsewhere.
mod console;
// MQTT over WebSockets: the mqtt-ws driver against the emulator, ws and wss.
mod websockets;
// setup -> run -> cleanup against the emulator's service and registry APIs.
mod lifecycle;
