//! Validation of the CI-gate sections: `[check]` (how `loadtest check` samples the classes) and
//! `[thresholds]` (k6-style criteria). Threshold keys may be quoted (`"latency.p99"`) or written
//! as TOML dotted keys (`outcome."failed:400207"`); both flatten to one metric path.
//!
//! Spans come from toml's `DeTable` (the serde mirror cannot keep spans inside the threshold
//! table's free-form values), so every error names the line of the offending key or value.

use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::ScenarioError;
use super::raw;
use super::validate::Validator;
use super::{CheckOptions, Class};
use crate::threshold::Threshold;

type Result<T> = std::result::Result<T, ScenarioError>;

/// Devices per class `loadtest check` exercises unless `[check] sample` says otherwise.
pub(super) const DEFAULT_SAMPLE: u64 = 25;
/// Arrivals per second of `loadtest check` unless `[check] rate` says otherwise.
pub(super) const DEFAULT_RATE: f64 = 50.0;

impl Validator<'_> {
    pub(super) fn check_options(&self, c: &Option<raw::Check>) -> Result<CheckOptions> {
        let Some(c) = c else {
            return Ok(CheckOptions::default());
        };
        let sample = match &c.sample {
            None => Some(DEFAULT_SAMPLE),
            Some(s) => match s.get_ref() {
                raw::Sample::Count(n) if *n >= 1 => Some(*n),
                raw::Sample::Word(w) if w == "all" => None,
                _ => {
                    return self.err(
                        s.span(),
                        "check.sample",
                        "devices per class: a number >= 1, or \"all\"",
                    )
                }
            },
        };
        let rate = match &c.rate {
            None => DEFAULT_RATE,
            Some(r) if *r.get_ref() > 0.0 && r.get_ref().is_finite() => *r.get_ref(),
            Some(r) => {
                return self.err(
                    r.span(),
                    "check.rate",
                    "a positive number of requests per second",
                )
            }
        };
        Ok(CheckOptions {
            sample,
            rate,
            snapshot: c.snapshot.as_ref().map(PathBuf::from),
        })
    }

    /// Parses `[thresholds]` from the document's spans.
    pub(super) fn thresholds(&self, classes: &[Class]) -> Result<Vec<Threshold>> {
        let doc = DeTable::parse(self.src.text)
            .map_err(|e| self.src.error_here(0, e.message().to_owned()))?;
        let Some(table) = doc
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "thresholds")
            .map(|(_, v)| v)
        else {
            return Ok(Vec::new());
        };
        let DeValue::Table(t) = table.get_ref() else {
            return self.err(table.span(), "thresholds", "must be a table");
        };
        let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
        let mut out = Vec::new();
        self.walk(t, "", &names, &mut out)?;
        // DeTable sorts its keys; reports list thresholds in file order.
        out.sort_by_key(|(at, _)| *at);
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    fn walk(
        &self,
        t: &DeTable<'_>,
        prefix: &str,
        classes: &[&str],
        out: &mut Vec<(usize, Threshold)>,
    ) -> Result<()> {
        for (k, v) in t {
            let seg = k.get_ref();
            let quoted = if prefix.is_empty() {
                seg.to_string()
            } else if seg.contains(['.', ':']) {
                format!("{prefix}.\"{seg}\"")
            } else {
                format!("{prefix}.{seg}")
            };
            let key = format!("thresholds.{quoted}");
            match v.get_ref() {
                // A nested table is a dotted key, unless it is a `{ threshold = … }` spec.
                DeValue::Table(inner) if !inner.iter().any(|(k, _)| k.get_ref() == "threshold") => {
                    self.walk(inner, &quoted, classes, out)?
                }
                DeValue::Array(items) => {
                    if items.is_empty() {
                        return self.err(v.span(), key, "an empty list of conditions");
                    }
                    for item in items {
                        let t = self.one(&quoted, item, k.span(), classes, &key)?;
                        out.push((item.span().start, t));
                    }
                }
                _ => out.push((
                    k.span().start,
                    self.one(&quoted, v, k.span(), classes, &key)?,
                )),
            }
        }
        Ok(())
    }

    /// One condition: `"< 250ms"` or `{ threshold = "< 250ms", abort_on_fail = true }`.
    fn one(
        &self,
        path: &str,
        v: &Spanned<DeValue<'_>>,
        key_span: Range<usize>,
        classes: &[&str],
        key: &str,
    ) -> Result<Threshold> {
        let (cond, abort) = match v.get_ref() {
            DeValue::String(s) => (s.to_string(), false),
            DeValue::Table(spec) => {
                let mut cond = None;
                let mut abort = false;
                for (k, val) in spec {
                    match (k.get_ref().as_ref(), val.get_ref()) {
                        ("threshold", DeValue::String(s)) => cond = Some(s.to_string()),
                        ("abort_on_fail", DeValue::Boolean(b)) => abort = *b,
                        ("threshold" | "abort_on_fail", _) => {
                            return self.err(
                                val.span(),
                                format!("{key}.{}", k.get_ref()),
                                "threshold is a string like \"< 250ms\"; abort_on_fail is true or false",
                            )
                        }
                        (other, _) => {
                            return self.err(
                                k.span(),
                                format!("{key}.{other}"),
                                "unknown key; a threshold table has `threshold` and `abort_on_fail`",
                            )
                        }
                    }
                }
                (cond.unwrap_or_default(), abort)
            }
            _ => {
                return self.err(
                    v.span(),
                    key,
                    "a condition string like \"< 250ms\", a list of them, or { threshold = \"…\", abort_on_fail = true }",
                )
            }
        };
        Threshold::new(path, &cond, classes, abort).map_err(|msg| {
            // Metric errors point at the key, condition errors at the value.
            let span = if crate::threshold::parse_metric(path, classes).is_err() {
                key_span
            } else {
                v.span()
            };
            self.src.error(span.start, key, msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::MIN;
    use super::super::Scenario;
    use crate::threshold::{Metric, Op};
    use std::path::Path;

    fn parse(extra: &str) -> Result<Scenario, String> {
        Scenario::parse(Path::new("s.toml"), &format!("{MIN}{extra}")).map_err(|e| e.to_string())
    }

    #[test]
    fn quoted_dotted_lists_and_tables() {
        let s = parse(
            "[thresholds]\n\"latency.p99\" = \"< 250ms\"\noutcome.\"failed:400207\" = \"== 0\"\n\
             \"error_rate{class:toaster}\" = [\"< 0.01\", { threshold = \"<= 0.05\", abort_on_fail = true }]\n\
             [check]\nsample = \"all\"\nrate = 10\n",
        )
        .unwrap();
        let names: Vec<&str> = s.thresholds.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "latency.p99 < 250ms",
                "outcome.\"failed:400207\" == 0",
                "error_rate{class:toaster} < 0.01",
                "error_rate{class:toaster} <= 0.05",
            ]
        );
        assert!(matches!(
            s.thresholds[1].metric,
            Metric::Outcome { rate: false, .. }
        ));
        assert_eq!(s.thresholds[3].op, Op::Le);
        assert!(s.thresholds[3].abort_on_fail && !s.thresholds[2].abort_on_fail);
        assert_eq!(s.check.sample, None);
        assert_eq!(s.check.rate, 10.0);
    }

    #[test]
    fn errors_name_line_and_key() {
        let line = MIN.lines().count() + 2;
        let e = parse("[thresholds]\n\"latncy.p99\" = \"< 250ms\"\n").unwrap_err();
        assert!(
            e.starts_with(&format!(
                "s.toml:{line}:1: thresholds.latncy.p99: unknown metric"
            )),
            "{e}"
        );
        let e = parse("[thresholds]\n\"latency.p99\" = \"< 250\"\n").unwrap_err();
        assert!(
            e.contains(&format!("s.toml:{line}:")) && e.contains("not a duration"),
            "{e}"
        );
        let e = parse("[thresholds]\n\"errors\" = { threshold = \"< 1\", abort = true }\n")
            .unwrap_err();
        assert!(e.contains("thresholds.errors.abort: unknown key"), "{e}");
        let e = parse("[check]\nsample = 0\n").unwrap_err();
        assert!(e.contains("check.sample"), "{e}");
    }
}
