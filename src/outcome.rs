//! How a request ended, typed. [`End`] says whether an answer arrived; a [`Failure`] says where a
//! failure came from ([`Source`]: the target, the network, TLS, the generator, a timeout), what
//! happened, and the DPS error code if the target gave one. Metrics and reports group by source
//! and message, never by parsing text.
//!
//! Bottom layer: plain data, imports nothing from the crate.

use serde::{Deserialize, Serialize};

/// How the last attempt of a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum End {
    /// An answer arrived (whatever it said), or DPS answered without calling the webhook.
    Answered,
    /// No answer: connection refused, reset, protocol error.
    Transport,
    /// No answer within the timeout.
    TimedOut,
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The target answered, with a refusal, an error status or something unreadable.
    Target,
    /// The connection: refused, reset, unreachable.
    Network,
    /// The TLS handshake.
    Tls,
    /// The load generator itself (a request it could not build or send).
    Generator,
    /// No answer in time.
    Timeout,
}

impl Source {
    /// The report name: `target`, `network`, `tls`, `generator`, `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Target => "target",
            Source::Network => "network",
            Source::Tls => "tls",
            Source::Generator => "generator",
            Source::Timeout => "timeout",
        }
    }

    /// Parses a report name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "target" => Source::Target,
            "network" => Source::Network,
            "tls" => Source::Tls,
            "generator" => Source::Generator,
            "timeout" => Source::Timeout,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's failure: how it ended, where it came from, what happened, the DPS code if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How the attempt ended.
    pub end: End,
    /// Where it came from.
    pub source: Source,
    /// What happened, without the source.
    pub message: String,
    /// The six-digit DPS error code the target gave, if any.
    pub code: Option<u32>,
}

impl Failure {
    /// A failure.
    pub fn new(end: End, source: Source, message: impl Into<String>) -> Self {
        Self {
            end,
            source,
            message: message.into(),
            code: None,
        }
    }

    /// With the target's DPS error code.
    pub fn with_code(mut self, code: Option<u32>) -> Self {
        self.code = code;
        self
    }

    /// The target answered with a refusal or an unusable answer.
    pub fn target(message: impl Into<String>) -> Self {
        Self::new(End::Answered, Source::Target, message)
    }

    /// The load generator could not do its part.
    pub fn generator(message: impl Into<String>) -> Self {
        Self::new(End::Transport, Source::Generator, message)
    }

    /// A TLS handshake that failed (`TLS handshake failed: …`).
    pub fn tls_handshake(e: impl std::fmt::Display) -> Self {
        Self::new(
            End::Transport,
            Source::Tls,
            format!("TLS handshake failed: {e}"),
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.source, self.message)
    }
}
