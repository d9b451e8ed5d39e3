//! [`Secret`]: a string (group key, device key, function key, connection string) that must never
//! appear in logs or reports. Its `Debug` prints `<redacted>`; only [`Secret::expose`] gives the
//! value, at the one place that must use it. Bottom layer: imports nothing from the crate.

/// A string that must never appear in logs or reports.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}
