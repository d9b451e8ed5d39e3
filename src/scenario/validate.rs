//! Raw TOML → typed [`Scenario`]: every value checked once, every error located and naming the
//! valid choices. `${NAME}` in secrets and URLs is expanded from the environment here.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use super::error::{ScenarioError, Source};
use super::{
    raw, Class, Current, Enrollment, Expect, Group, Individual, Load, Rate, ReportOptions,
    Scenario, Secret, Stage, Target,
};
use crate::device::keys::decode_key;
use crate::device::template::IdTemplate;
use crate::dps::allocation::{
    mask_url, Attestation, Capabilities, CustomAllocationDefinition, EnrollmentRecord,
    ReprovisionPolicy,
};
use crate::dps::outcome::{NoAnswer, RetryPolicy, Rules};
use crate::dps::Status;
use crate::webhook::fault::{Action, Fault};
use crate::webhook::policy::Policy;

type Result<T> = std::result::Result<T, ScenarioError>;

/// The webhook URL DPS shows when the scenario drives the embedded webhook.
const EMBEDDED_URL: &str =
    "https://contoso-function-app-1098.azurewebsites.net/api/HttpTrigger1?code=embedded";
const DEFAULT_CREATED: &str = "2022-08-03T17:15:10.8464255Z";

pub(super) fn validate(path: &Path, text: &str) -> Result<Scenario> {
    let src = Source { path, text };
    let raw: raw::Scenario = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        src.error_here(offset, e.message().trim().to_owned())
    })?;
    let v = Validator { src: &src };
    v.scenario(raw)
}

struct Validator<'a> {
    src: &'a Source<'a>,
}

impl Validator<'_> {
    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> Result<T> {
        Err(self.src.error(span.start, key, msg))
    }

    /// Expands `${NAME}` from the environment.
    fn expand(&self, s: &Spanned<String>, key: &str) -> Result<String> {
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

    fn duration(&self, s: &Spanned<String>, key: &str) -> Result<Duration> {
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
        Ok(Scenario {
            path: self.src.path.to_owned(),
            name,
            description: r.description,
            seed: r.seed.unwrap_or(0),
            target,
            policy,
            rules,
            enrollment,
            classes,
            load,
            report: ReportOptions {
                out: r.report.out.unwrap_or_else(|| "reports".into()).into(),
                examples: r.report.examples.unwrap_or(5),
            },
        })
    }

    fn target(&self, t: &raw::Target) -> Result<Target> {
        if let Some(m) = &t.mode {
            match m.get_ref().as_str() {
                "webhook" => {}
                "mqtt" | "https" | "mqtt-ws" => {
                    return self.err(
                        m.span(),
                        "target.mode",
                        format!(
                            "mode `{}` is not implemented yet; choose from: webhook",
                            m.get_ref()
                        ),
                    )
                }
                other => {
                    return self.err(
                        m.span(),
                        "target.mode",
                        format!("unknown mode `{other}`; choose from: webhook, mqtt, https"),
                    )
                }
            }
        }
        let url = match &t.url {
            None => None,
            Some(u) => {
                let url = self.expand(u, "target.url")?;
                if !url.starts_with("http://") {
                    let what = if url.starts_with("https://") {
                        "https:// targets need TLS, which this build does not have yet; use http://"
                    } else {
                        "the URL must start with http://"
                    };
                    return self.err(u.span(), "target.url", what);
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
        Ok(Target {
            url,
            function_key,
            timeout,
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

    fn key(&self, k: &Spanned<String>, key: &str) -> Result<Secret> {
        let v = self.expand(k, key)?;
        decode_key(&v).map_err(|e| self.src.error(k.span().start, key, e.to_string()))?;
        Ok(Secret::new(v))
    }

    fn status(&self, s: &Option<Spanned<String>>, key: &str) -> Result<String> {
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

    fn enrollment(
        &self,
        e: Option<Spanned<raw::Enrollment>>,
        individuals: Vec<raw::Individual>,
        webhook_url: &str,
        classes: &[Class],
        name_span: std::ops::Range<usize>,
    ) -> Result<Enrollment> {
        let span = e.as_ref().map_or(name_span, |e| e.span());
        let e = e.map(Spanned::into_inner);
        let api_version = e
            .as_ref()
            .and_then(|e| e.api_version.clone())
            .unwrap_or_else(|| "2021-10-01".into());
        let created = e
            .as_ref()
            .and_then(|e| e.created.clone())
            .unwrap_or_else(|| DEFAULT_CREATED.into());
        let iot_hubs = e
            .as_ref()
            .and_then(|e| e.iot_hubs.as_ref())
            .map(|h| h.get_ref().clone());
        let linked_hubs = e
            .as_ref()
            .and_then(|e| e.linked_hubs.as_ref())
            .map(|h| h.get_ref().clone());
        let (iot_hubs, linked_hubs) = match (iot_hubs, linked_hubs) {
            (Some(i), Some(l)) => {
                if let Some(h) = i.iter().find(|h| !l.contains(h)) {
                    let s = e
                        .as_ref()
                        .and_then(|e| e.iot_hubs.as_ref())
                        .map_or(span, |h| h.span());
                    return self.err(
                        s,
                        "enrollment.iot_hubs",
                        format!("`{h}` is not one of enrollment.linked_hubs"),
                    );
                }
                (i, l)
            }
            (Some(i), None) => (i.clone(), i),
            (None, Some(l)) => (l.clone(), l),
            (None, None) => {
                return self.err(
                    span,
                    "enrollment.iot_hubs",
                    "name at least one IoT hub (iot_hubs or linked_hubs)",
                )
            }
        };
        let definition = CustomAllocationDefinition {
            webhook_url: mask_url(webhook_url),
            api_version,
        };
        let record = |group_id: Option<String>,
                      reg: Option<String>,
                      device_id: Option<String>,
                      status: String,
                      reprov: Option<raw::Reprovision>,
                      edge: Option<bool>,
                      hubs: Vec<String>,
                      etag_seed: &str| EnrollmentRecord {
            enrollment_group_id: group_id,
            registration_id: reg,
            device_id,
            attestation: Attestation {
                kind: "symmetricKey".into(),
            },
            capabilities: Capabilities {
                iot_edge: edge.unwrap_or(false),
            },
            etag: etag(etag_seed),
            provisioning_status: status,
            reprovision_policy: reprov.map_or_else(ReprovisionPolicy::default, |r| {
                ReprovisionPolicy {
                    update_hub_assignment: r.update_hub_assignment,
                    migrate_device_data: r.migrate_device_data,
                }
            }),
            created_date_time_utc: created.clone(),
            last_updated_date_time_utc: created.clone(),
            allocation_policy: "custom".into(),
            iot_hubs: hubs,
            custom_allocation_definition: definition.clone(),
        };

        let mut seen = HashSet::new();
        let mut ind = Vec::new();
        for i in individuals {
            let reg = i.registration_id.get_ref().clone();
            if IdTemplate::parse(&reg)
                .map(|t| t.has_placeholder())
                .unwrap_or(true)
            {
                return self.err(
                    i.registration_id.span(),
                    "individual_enrollments.registration_id",
                    "must be one valid registration ID (letters, digits, `-._:`)",
                );
            }
            if !seen.insert(reg.to_ascii_lowercase()) {
                return self.err(
                    i.registration_id.span(),
                    "individual_enrollments.registration_id",
                    format!("`{reg}` is enrolled twice"),
                );
            }
            let primary_key = self.key(&i.primary_key, "individual_enrollments.primary_key")?;
            let secondary_key = i
                .secondary_key
                .as_ref()
                .map(|k| self.key(k, "individual_enrollments.secondary_key"))
                .transpose()?;
            let status = self.status(
                &i.provisioning_status,
                "individual_enrollments.provisioning_status",
            )?;
            let hubs = i
                .iot_hubs
                .as_ref()
                .map_or_else(|| iot_hubs.clone(), |h| h.get_ref().clone());
            let device_id = i.device_id.clone().unwrap_or_else(|| reg.clone());
            ind.push(Individual {
                record: record(
                    None,
                    Some(reg.clone()),
                    i.device_id.clone(),
                    status.clone(),
                    i.reprovision,
                    i.iot_edge,
                    hubs.clone(),
                    &reg,
                ),
                registration_id: reg,
                primary_key,
                secondary_key,
                device_id,
                disabled: status == "disabled",
                initial_twin: i.initial_twin.as_ref().map(twin_json),
                offered_hubs: hubs,
            });
        }

        let group = match &e {
            Some(e) if e.group_id.is_some() || e.primary_key.is_some() => {
                let Some(gid) = &e.group_id else {
                    return self.err(
                        span,
                        "enrollment.group_id",
                        "an enrollment group needs a group_id",
                    );
                };
                let Some(pk) = &e.primary_key else {
                    return self.err(
                        gid.span(),
                        "enrollment.primary_key",
                        "an enrollment group needs a primary_key (e.g. \"${DPS_GROUP_KEY}\")",
                    );
                };
                let primary_key = self.key(pk, "enrollment.primary_key")?;
                let secondary_key = e
                    .secondary_key
                    .as_ref()
                    .map(|k| self.key(k, "enrollment.secondary_key"))
                    .transpose()?;
                let status =
                    self.status(&e.provisioning_status, "enrollment.provisioning_status")?;
                Some(Group {
                    record: record(
                        Some(gid.get_ref().clone()),
                        None,
                        None,
                        status,
                        e.reprovision,
                        e.iot_edge,
                        iot_hubs.clone(),
                        gid.get_ref(),
                    ),
                    primary_key,
                    secondary_key,
                    initial_twin: e.initial_twin.as_ref().map(twin_json),
                    offered_hubs: iot_hubs,
                })
            }
            _ => None,
        };
        let enrollment = Enrollment {
            group,
            individuals: ind,
            linked_hubs,
        };
        if enrollment.group.is_none() {
            // Every device must then be covered by an individual enrollment.
            for c in classes {
                for n in c.range.0..=c.range.1.min(c.range.0 + 10_000) {
                    let id = c.template.render(n);
                    if enrollment.individual(&id).is_none() {
                        return self.err(span, "enrollment.group_id", format!("device `{id}` (class `{}`) has no individual enrollment and there is no enrollment group", c.name));
                    }
                }
            }
        }
        Ok(enrollment)
    }

    fn classes(&self, devices: Vec<raw::Class>) -> Result<Vec<Class>> {
        if devices.is_empty() {
            return Err(self.src.error(
                0,
                "devices",
                "a scenario needs at least one [[devices]] class",
            ));
        }
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(devices.len());
        for (i, d) in devices.into_iter().enumerate() {
            let k = |f: &str| format!("devices[{i}].{f}");
            let name = d.class.get_ref().clone();
            if !names.insert(name.clone()) {
                return self.err(
                    d.class.span(),
                    k("class"),
                    format!("class `{name}` is defined twice"),
                );
            }
            let template = IdTemplate::parse(d.id.get_ref())
                .map_err(|e| self.src.error(d.id.span().start, k("id"), e.to_string()))?;
            let range = match (&d.count, &d.range) {
                (Some(_), Some(r)) => {
                    return self.err(r.span(), k("range"), "give either count or range, not both")
                }
                (Some(c), None) if *c.get_ref() == 0 => {
                    return self.err(c.span(), k("count"), "must be at least 1")
                }
                (Some(c), None) => (1, *c.get_ref()),
                (None, Some(r)) if r.get_ref()[0] > r.get_ref()[1] => {
                    return self.err(
                        r.span(),
                        k("range"),
                        "write [first, last] with first <= last",
                    )
                }
                (None, Some(r)) => (r.get_ref()[0], r.get_ref()[1]),
                (None, None) if template.has_placeholder() => {
                    return self.err(
                        d.id.span(),
                        k("count"),
                        "a template with `{n}` needs count or range",
                    )
                }
                (None, None) => (0, 0),
            };
            if !template.has_placeholder() && range.0 != range.1 {
                return self.err(
                    d.id.span(),
                    k("id"),
                    "a fixed ID (no `{n}`) is one device; add `{n}` or set count = 1",
                );
            }
            let payload_json = d
                .payload
                .as_ref()
                .map(|p| serde_json::to_string(&table_json(p.get_ref())).expect("json"));
            let current = d.current.map(|c| Current {
                hub: c.hub,
                device_id: c.device_id,
            });
            let expect = self.expect(&d.expect, &k("expect"))?;
            let fault = d
                .fault
                .as_ref()
                .map(|f| self.fault(f, &k("fault")))
                .transpose()?;
            out.push(Class {
                name,
                template,
                range,
                payload_json,
                current,
                expect,
                fault,
            });
        }
        Ok(out)
    }

    fn expect(&self, e: &Spanned<raw::Expect>, key: &str) -> Result<Expect> {
        let span = e.span();
        let e = e.get_ref();
        let status = match Status::parse(e.status.get_ref()) {
            Some(s @ (Status::Assigned | Status::Failed | Status::Disabled)) => s,
            _ => {
                return self.err(
                    e.status.span(),
                    format!("{key}.status"),
                    format!(
                        "unknown status `{}`; choose from: assigned, failed, disabled",
                        e.status.get_ref()
                    ),
                )
            }
        };
        if status != Status::Failed && (e.error_code.is_some() || e.error_message.is_some()) {
            return self.err(
                span,
                format!("{key}.error_code"),
                "error_code and error_message apply only to status = \"failed\"",
            );
        }
        if status != Status::Assigned
            && (e.hub.is_some() || e.twin.is_some() || e.device_id.is_some())
        {
            return self.err(
                span,
                format!("{key}.hub"),
                "hub, device_id and twin apply only to status = \"assigned\"",
            );
        }
        Ok(Expect {
            status,
            hub: e.hub.clone(),
            device_id: e.device_id.clone(),
            error_code: e.error_code,
            error_message: e.error_message.clone(),
            twin_tags: e
                .twin
                .as_ref()
                .and_then(|t| t.tags.as_ref())
                .map(table_json),
            twin_desired: e
                .twin
                .as_ref()
                .and_then(|t| t.desired.as_ref())
                .map(table_json),
            payload: e.payload.as_ref().map(table_json),
        })
    }

    fn fault(&self, f: &Spanned<raw::Fault>, key: &str) -> Result<Fault> {
        let span = f.span();
        let f = f.get_ref();
        let mut actions = Vec::new();
        if let Some(s) = &f.status {
            if !(100..=599).contains(s.get_ref()) {
                return self.err(
                    s.span(),
                    format!("{key}.status"),
                    "an HTTP status is 100..=599",
                );
            }
            actions.push(Action::Status(*s.get_ref(), f.body.clone()));
        } else if f.body.is_some() {
            return self.err(span, format!("{key}.body"), "body goes with status");
        }
        if let Some(h) = &f.hub {
            actions.push(match h.get_ref().as_str() {
                "null" => Action::NullHub,
                "empty" => Action::EmptyHub,
                "unlinked" => Action::UnlinkedHub,
                other => {
                    return self.err(
                        h.span(),
                        format!("{key}.hub"),
                        format!(
                            "unknown hub fault `{other}`; choose from: {}",
                            Action::HUB_NAMES.join(", ")
                        ),
                    )
                }
            });
        }
        if f.malformed == Some(true) {
            actions.push(Action::Malformed);
        }
        if actions.len() > 1 {
            return self.err(
                span,
                key.to_owned(),
                "choose one of status, hub and malformed",
            );
        }
        let delay = f
            .delay
            .as_ref()
            .map(|d| self.duration(d, &format!("{key}.delay")))
            .transpose()?;
        if actions.is_empty() && delay.is_none() {
            return self.err(
                span,
                key.to_owned(),
                "a fault needs status, hub, malformed or delay",
            );
        }
        let fraction = match &f.fraction {
            Some(x) if !(*x.get_ref() > 0.0 && *x.get_ref() <= 1.0) => {
                return self.err(
                    x.span(),
                    format!("{key}.fraction"),
                    "a fraction is in (0, 1]",
                )
            }
            Some(x) => *x.get_ref(),
            None => 1.0,
        };
        Ok(Fault {
            delay,
            action: actions.pop(),
            fraction,
            first_calls: f.first_calls,
        })
    }

    fn load(&self, l: &raw::Load) -> Result<Load> {
        let rate = match &l.rate {
            None => Rate::PerSecond(100.0),
            Some(r) => match r.get_ref() {
                raw::Rate::PerSecond(x) if *x > 0.0 && x.is_finite() => Rate::PerSecond(*x),
                raw::Rate::Word(w) if w == "max" => Rate::Max,
                _ => {
                    return self.err(
                        r.span(),
                        "load.rate",
                        "a positive number of requests per second, or \"max\" (closed loop)",
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
        for s in l.stages.iter().flatten() {
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
            if total > d {
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
        Ok(Load {
            rate,
            connections,
            duration,
            count,
            stages,
            max_in_flight,
            grace,
        })
    }
}

fn table_json(t: &toml::Table) -> Value {
    serde_json::to_value(t).expect("TOML tables are JSON-representable")
}

fn twin_json(t: &raw::Twin) -> Value {
    let mut v = serde_json::Map::new();
    if let Some(tags) = &t.tags {
        v.insert("tags".into(), table_json(tags));
    }
    if let Some(d) = &t.desired {
        v.insert(
            "properties".into(),
            serde_json::json!({ "desired": table_json(d) }),
        );
    }
    Value::Object(v)
}

/// A stable Cosmos-style etag derived from a name (quoted, as DPS sends it).
fn etag(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("\"{}-0000-0700-0000-{}\"", &hex[..8], &hex[8..20])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    const MIN: &str = r#"
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
}
