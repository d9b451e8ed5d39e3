//! Raw TOML → typed [`Scenario`]: every value checked once, every error located and naming the
//! valid choices. `${NAME}` in secrets and URLs is expanded from the environment here.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::flags::Flags;
use super::{raw, Load, Mode, Rate, ReportOptions, Scenario, Secret, Stage, Target};
use crate::device::keys::decode_key;
use crate::dps::outcome::{NoAnswer, RetryPolicy, Rules};
use crate::webhook::policy::Policy;

type Result<T> = std::result::Result<T, ScenarioError>;

/// The webhook URL DPS shows when the scenario drives the embedded webhook.
const EMBEDDED_URL: &str =
    "https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?code=embedded";

pub(super) fn validate(path: &Path, text: &str, flags: &Flags) -> Result<Scenario> {
    let src = Source { path, text };
    let mut raw: raw::Scenario = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        src.error_here(offset, e.message().trim().to_owned())
    })?;
    flags.apply(&mut raw);
    let v = Validator { src: &src, flags };
    let mut s = v.scenario(raw)?;
    s.hash = hash(text, flags);
    Ok(s)
}

/// The scenario's identity: its text and every overriding flag but `--shard`.
fn hash(text: &str, flags: &Flags) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update(b"\0");
    h.update(flags.identity().as_bytes());
    hex::encode(h.finalize())
}

pub(super) struct Validator<'a> {
    pub(super) src: &'a Source<'a>,
    /// The command line's overrides (already in the raw values; some rules depend on them).
    pub(super) flags: &'a Flags,
}

/// Lowest open-loop rate: one request in ~17 minutes. Below it a schedule is meaningless.
pub(super) const MIN_RATE: f64 = 0.001;
/// Highest open-loop rate one process is asked for (a generator does well under a million).
pub(super) const MAX_RATE: f64 = 10_000_000.0;

impl Validator<'_> {
    pub(super) fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Result<T> {
        Err(self.src.error(span.start, key, msg))
    }

    /// Expands `${NAME}` from the environment.
    pub(super) fn expand(&self, s: &Spanned<String>, key: &str) -> Result<String> {
        let mut out = String::new();
        let mut rest = s.get_ref().as_str();
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let Some(end) = rest[i..].find('}') else {
                return self.err(s.span(), key, "unclosed `${` (write `${NAME}`)");
            };
            let name = &rest[i + 2..i + end];
            match std::env::var(name) {
                Ok(v) => out.push_str(&v),
                Err(_) => {
                    return self.err(
                        s.span(),
                        key,
                        format!("environment variable `{name}` is not set"),
                    )
                }
            }
            rest = &rest[i + end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub(super) fn duration(&self, s: &Spanned<String>, key: &str) -> Result<Duration> {
        humantime::parse_duration(s.get_ref().trim()).map_err(|e| {
            self.src.error(
                s.span().start,
                key,
                format!(
                    "`{}` is not a duration ({e}); write e.g. \"250ms\", \"10s\", \"2m\"",
                    s.get_ref()
                ),
            )
        })
    }

    fn scenario(&self, r: raw::Scenario) -> Result<Scenario> {
        let name = r.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return self.err(
                r.name.span(),
                "name",
                "use letters, digits, `-`, `_` and `.` only (it names the report directory)",
            );
        }
        let target = self.target(&r.target)?;
        let policy = match &r.webhook.policy {
            None => Policy::TutorialCurrent,
            Some(p) => match Policy::parse(p.get_ref()) {
                Some(p) => p,
                None => {
                    return self.err(
                        p.span(),
                        "webhook.policy",
                        format!(
                            "unknown policy `{}`; choose from: {}",
                            p.get_ref(),
                            Policy::NAMES.join(", ")
                        ),
                    )
                }
            },
        };
        let rules = self.rules(&r.dps)?;
        let webhook_url = target
            .url
            .as_ref()
            .map_or(EMBEDDED_URL, |u| u.expose())
            .to_owned();
        let classes = self.classes(r.devices)?;
        let enrollment = self.enrollment(
            r.enrollment,
            r.individual_enrollments,
            &webhook_url,
            &classes,
            r.name.span(),
        )?;
        let load = self.load(&r.load)?;
        let check = self.check_options(&r.check)?;
        let thresholds = self.thresholds(&classes)?;
        let emulator = self.emulator(&r.emulator, &enrollment.linked_hubs)?;
        let capacity = self.capacity(&r.capacity, &enrollment)?;
        Ok(Scenario {
            path: self.src.path.to_owned(),
            name,
            description: r.description,
            seed: r.seed.unwrap_or(0),
            target,
            policy,
            echo_payload: r.webhook.echo_payload.unwrap_or(false),
            rules,
            enrollment,
            classes,
            load,
            report: ReportOptions {
                out: r.report.out.unwrap_or_else(|| "reports".into()).into(),
                examples: r.report.examples.unwrap_or(5),
            },
            check,
            thresholds,
            emulator,
            capacity,
            shard: self.flags.shard,
            hash: String::new(),
        })
    }

    fn target(&self, t: &raw::Target) -> Result<Target> {
        let mode = match &t.mode {
            None => Mode::Webhook,
            Some(m) => match m.get_ref().as_str() {
                "webhook" => Mode::Webhook,
                "mqtt" => Mode::Mqtt,
                "mqtt-ws" => Mode::MqttWs,
                "https" => Mode::Https,
                other => {
                    return self.err(
                        m.span(),
                        "target.mode",
                        format!(
                            "unknown mode `{other}`; choose from: webhook, mqtt, mqtt-ws, https"
                        ),
                    )
                }
            },
        };
        let device = self.device_target(t)?;
        let url = match &t.url {
            None => None,
            Some(u) => {
                let url = self.expand(u, "target.url")?;
                if let Err(e) = super::check_url(&url) {
                    return self.err(u.span(), "target.url", e);
                }
                Some(Secret::new(url))
            }
        };
        let function_key = t
            .function_key
            .as_ref()
            .map(|k| self.expand(k, "target.function_key").map(Secret::new))
            .transpose()?;
        let timeout = match &t.timeout {
            Some(s) => self.duration(s, "target.timeout")?,
            None => Duration::from_secs(10),
        };
        if timeout.is_zero() {
            return self.err(
                t.timeout.as_ref().map_or(0..0, |s| s.span()),
                "target.timeout",
                "must be greater than zero",
            );
        }
        let ca = match &t.ca {
            Some(c) if c.get_ref().trim().is_empty() => {
                return self.err(
                    c.span(),
                    "target.ca",
                    "a PEM file of CA certificates to trust",
                );
            }
            Some(c) => Some(std::path::PathBuf::from(self.expand(c, "target.ca")?)),
            None => None,
        };
        Ok(Target {
            mode,
            url,
            function_key,
            ca,
            timeout,
            device,
        })
    }

    fn rules(&self, d: &raw::Dps) -> Result<Rules> {
        let mut retry = RetryPolicy::default();
        if let Some(s) = &d.retry_scale {
            if !(*s.get_ref() > 0.0 && s.get_ref().is_finite()) {
                return self.err(
                    s.span(),
                    "dps.retry_scale",
                    "must be a positive number (1.0 = real DPS timing)",
                );
            }
            retry.scale = *s.get_ref();
        }
        if let Some(c) = d.retry_count {
            retry.count = c;
        }
        if let Some(s) = &d.retry_initial {
            retry.initial = self.duration(s, "dps.retry_initial")?;
        }
        if let Some(s) = &d.retry_increment {
            retry.increment = self.duration(s, "dps.retry_increment")?;
        }
        let mut rules = Rules {
            retry,
            ..Rules::default()
        };
        if let Some(s) = &d.no_answer {
            rules.no_answer = match s.get_ref().as_str() {
                "fail" => NoAnswer::Fail,
                "retry" => NoAnswer::Retry,
                other => {
                    return self.err(
                        s.span(),
                        "dps.no_answer",
                        format!("unknown value `{other}`; choose from: fail, retry"),
                    )
                }
            };
        }
        rules.no_answer_code = d.no_answer_code.unwrap_or(rules.no_answer_code);
        rules.unlinked_hub_code = d.unlinked_hub_code.unwrap_or(rules.unlinked_hub_code);
        rules.malformed_code = d.malformed_code.unwrap_or(rules.malformed_code);
        Ok(rules)
    }

    pub(super) fn key(&self, k: &Spanned<String>, key: &str) -> Result<Secret> {
        let v = self.expand(k, key)?;
        decode_key(&v).map_err(|e| self.src.error(k.span().start, key, e.to_string()))?;
        Ok(Secret::new(v))
    }

    pub(super) fn status(&self, s: &Option<Spanned<String>>, key: &str) -> Result<String> {
        match s {
            None => Ok("enabled".into()),
            Some(s) if s.get_ref() == "enabled" || s.get_ref() == "disabled" => {
                Ok(s.get_ref().clone())
            }
            Some(s) => self.err(
                s.span(),
                key,
                format!(
                    "unknown status `{}`; choose from: enabled, disabled",
                    s.get_ref()
                ),
            ),
        }
    }

    fn load(&self, l: &raw::Load) -> Result<Load> {
        let rate = match &l.rate {
            None => Rate::PerSecond(100.0),
            Some(r) => match r.get_ref() {
                raw::Rate::PerSecond(x) if (MIN_RATE..=MAX_RATE).contains(x) => {
                    Rate::PerSecond(*x)
                }
                raw::Rate::Word(w) if w == "max" => Rate::Max,
                _ => {
                    return self.err(
                        r.span(),
                        "load.rate",
                        format!("a number of requests per second from {MIN_RATE} to {MAX_RATE}, or \"max\" (closed loop)"),
                    )
                }
            },
        };
        let positive = |s: &Option<Spanned<u32>>, key: &str, default: u32| -> Result<u32> {
            match s {
                Some(v) if *v.get_ref() == 0 => self.err(v.span(), key, "must be at least 1"),
                Some(v) => Ok(*v.get_ref()),
                None => Ok(default),
            }
        };
        let connections = positive(&l.connections, "load.connections", 64)?;
        let max_in_flight = positive(&l.max_in_flight, "load.max_in_flight", 1000)?;
        let duration = l
            .duration
            .as_ref()
            .map(|d| self.duration(d, "load.duration"))
            .transpose()?;
        let count = match &l.count {
            Some(c) if *c.get_ref() == 0 => {
                return self.err(c.span(), "load.count", "must be at least 1")
            }
            c => c.as_ref().map(|c| *c.get_ref()),
        };
        let mut stages = Vec::new();
        // `--rate max` replaces a ramp with a closed loop.
        let file_stages = if self.flags.rate_is_max() {
            None
        } else {
            l.stages.as_ref()
        };
        for s in file_stages.into_iter().flatten() {
            if !(*s.to.get_ref() >= 0.0 && s.to.get_ref().is_finite()) {
                return self.err(s.to.span(), "load.stages.to", "a rate is a number >= 0");
            }
            let over = self.duration(&s.over, "load.stages.over")?;
            if over.is_zero() {
                return self.err(
                    s.over.span(),
                    "load.stages.over",
                    "must be greater than zero",
                );
            }
            stages.push(Stage {
                to: *s.to.get_ref(),
                over,
            });
        }
        if rate == Rate::Max && !stages.is_empty() {
            return self.err(
                l.rate.as_ref().map_or(0..0, |r| r.span()),
                "load.stages",
                "stages need an open-loop rate, not \"max\"",
            );
        }
        if let (Some(d), false) = (duration, stages.is_empty()) {
            let total: Duration = stages.iter().map(|s| s.over).sum();
            if total > d && self.flags.duration.is_some() {
                // `--duration` shorter than the ramp: a flat run at the start rate.
                stages.clear();
            } else if total > d {
                return self.err(
                    l.duration.as_ref().map_or(0..0, |d| d.span()),
                    "load.duration",
                    format!("the stages last {total:?}, longer than the duration"),
                );
            }
        }
        let grace = l
            .grace
            .as_ref()
            .map(|g| self.duration(g, "load.grace"))
            .transpose()?
            .unwrap_or(Duration::from_secs(5));
        let (rate, connections, max_in_flight, count) = match self.flags.shard {
            None => (rate, connections, max_in_flight, count),
            Some((i, n)) => {
                if n == 0 || i >= n {
                    return self.err(
                        Flags::shard_span(),
                        "load",
                        format!("{i}/{n}: write I/N with 0 <= I < N, e.g. 0/3"),
                    );
                }
                let nf = f64::from(n);
                for st in &mut stages {
                    st.to /= nf;
                }
                let rate = match rate {
                    Rate::PerSecond(r) => Rate::PerSecond(r / nf),
                    Rate::Max => Rate::Max,
                };
                // Shard i takes its share of the requests, the first `c % n` shards one more.
                let count =
                    count.map(|c| c / u64::from(n) + u64::from(u64::from(i) < c % u64::from(n)));
                (
                    rate,
                    (connections / n).max(1),
                    (max_in_flight / n).max(1),
                    count,
                )
            }
        };
        Ok(Load {
            rate,
            connections,
            duration,
            count,
            stages,
            max_in_flight,
            grace,
            search: self.search(&l.search)?,
            granularity: match &l.granularity {
                Some(g) => {
                    let d = self.duration(g, "load.granularity")?;
                    if d > Duration::from_millis(100) {
                        return self.err(g.span(), "load.granularity", "at most 100ms");
                    }
                    Some(d)
                }
                None => None,
            },
            lanes: match &l.lanes {
                Some(n) if *n.get_ref() > 256 => {
                    return self.err(
                        n.span(),
                        "load.lanes",
                        "at most 256 (one per core is the default)",
                    )
                }
                n => n.as_ref().map(|n| *n.get_ref()),
            },
            rounds: match &l.rounds {
                Some(r) if *r.get_ref() == 0 => {
                    return self.err(r.span(), "load.rounds", "must be at least 1")
                }
                r => r.as_ref().map_or(1, |r| *r.get_ref()),
            },
        })
    }
}

pub(super) fn table_json(t: &toml::Table) -> Value {
    serde_json::to_value(t).expect("TOML tables are JSON-representable")
}

#[cfg(test)]
pub(in crate::scenario) mod tests {
    use super::*;
    use crate::scenario::Scenario;

    pub(in crate::scenario) const MIN: &str = r#"
name = "t"
[enrollment]
group_id = "g"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["a-toasters-hub.azure-devices.net"]
[[devices]]
class = "toaster"
id = "t{n}-contoso-tstrsd-007"
count = 3
expect = { status = "assigned", hub = "a-toasters-hub.azure-devices.net" }
"#;

    fn err(text: &str) -> String {
        Scenario::parse(Path::new("s.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_scenario_defaults() {
        let s = Scenario::parse(Path::new("s.toml"), MIN).unwrap();
        assert_eq!(s.classes[0].range, (1, 3));
        assert_eq!(s.load.rate, Rate::PerSecond(100.0));
        assert_eq!(s.policy, Policy::TutorialCurrent);
        assert!(s.target.url.is_none());
        let g = s.enrollment.group.unwrap();
        assert_eq!(
            g.record.custom_allocation_definition.webhook_url,
            "https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?****"
        );
        assert!(
            g.record.etag.starts_with('"') && g.record.etag.len() == 38,
            "{}",
            g.record.etag
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let e = err(&MIN.replace("[enrollment]", "[load]\nrat = 5\n[enrollment]"));
        assert!(
            e.starts_with("s.toml:4:1: load.rat: unknown field `rat`, expected one of"),
            "{e}"
        );
    }

    #[test]
    fn type_error_is_located() {
        let e = err(&MIN.replace("count = 3", "count = \"three\""));
        assert!(
            e.starts_with("s.toml:10:9: devices.count: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_choices() {
        let e = err(&MIN.replace("status = \"assigned\"", "status = \"assignd\""));
        assert!(
            e.contains("s.toml:11:21:")
                && e.contains("devices[0].expect.status")
                && e.contains("choose from: assigned, failed, disabled"),
            "{e}"
        );
        let e = err(&format!("{MIN}[webhook]\npolicy = \"x\"\n"));
        assert!(e.contains("webhook.policy: unknown policy `x`; choose from: howto-2018, tutorial-2020, tutorial-current"), "{e}");
        let e = err(&format!("{MIN}[load]\nrate = -3\n"));
        assert!(e.contains("load.rate"), "{e}");
        let e = err(&MIN.replace("primary_key = \"oiK", "primary_key = \"!!"));
        assert!(
            e.contains("enrollment.primary_key: the key is not valid base64"),
            "{e}"
        );
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("LOADTEST_TEST_URL_PORT", "7071");
        let s = Scenario::parse(Path::new("s.toml"), &format!("{MIN}[target]\nurl = \"http://127.0.0.1:${{LOADTEST_TEST_URL_PORT}}/api/f?code=zz\"\n")).unwrap();
        assert_eq!(
            s.target.url.unwrap().expose(),
            "http://127.0.0.1:7071/api/f?code=zz"
        );
        let e = err(&format!(
            "{MIN}[target]\nurl = \"${{LOADTEST_SURELY_UNSET}}\"\n"
        ));
        assert!(
            e.contains("target.url: environment variable `LOADTEST_SURELY_UNSET` is not set"),
            "{e}"
        );
    }

    #[test]
    fn lanes_and_granularity_default_by_mode_and_are_bounded() {
        let s = Scenario::parse(Path::new("s.toml"), MIN).unwrap();
        assert_eq!(s.load.lanes, None);
        assert_eq!(s.load.granularity_in(Mode::Webhook), Duration::ZERO);
        assert_eq!(s.load.granularity_in(Mode::Mqtt), Duration::from_millis(1));
        let text = MIN.to_owned() + "[load]\nlanes = 3\ngranularity = \"250us\"\n";
        let s = Scenario::parse(Path::new("s.toml"), &text).unwrap();
        assert_eq!(s.load.lanes, Some(3));
        assert_eq!(
            s.load.granularity_in(Mode::Https),
            Duration::from_micros(250)
        );
        for (line, want) in [
            ("lanes = 1000", "load.lanes: at most 256"),
            ("granularity = \"1s\"", "load.granularity: at most 100ms"),
        ] {
            let text = MIN.to_owned() + "[load]\n" + line + "\n";
            let e = Scenario::parse(Path::new("s.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("s.toml:13:") && e.contains(want),
                "{line}: {e}"
            );
        }
    }
}
