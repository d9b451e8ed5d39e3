//! Validation of `[[devices]]` classes: ID templates and ranges, payloads, reprovisioning
//! context, expectations and reference-webhook faults. Part of the raw → typed pass.

use std::collections::HashSet;

use toml::Spanned;

use super::error::ScenarioError;
use super::validate::{table_json, Validator};
use super::{raw, Class, Current, Expect};
use crate::device::template::IdTemplate;
use crate::dps::Status;
use crate::webhook::fault::{Action, Fault};

type Result<T> = std::result::Result<T, ScenarioError>;

/// Largest population a scenario declares (every class's devices together): the seeded load
/// order is kept as a list of this many entries (16 bytes each).
pub(super) const MAX_POPULATION: u64 = 10_000_000;

impl Validator<'_> {
    pub(super) fn classes(&self, devices: Vec<raw::Class>) -> Result<Vec<Class>> {
        if devices.is_empty() {
            return Err(self.src.error(
                0,
                "devices",
                "a scenario needs at least one [[devices]] class",
            ));
        }
        let mut names = HashSet::new();
        let mut population: u64 = 0;
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
            // Checked before anything is allocated for the population (its order is a list).
            let size = (range.1 - range.0).saturating_add(1);
            population = population.saturating_add(size);
            if population > MAX_POPULATION {
                let at = d
                    .count
                    .as_ref()
                    .map(|c| c.span())
                    .or(d.range.as_ref().map(|r| r.span()));
                return self.err(
                    at.unwrap_or_else(|| d.id.span()),
                    k(if d.range.is_some() { "range" } else { "count" }),
                    format!("the scenario's population would be {population} devices; at most {MAX_POPULATION} (shard a larger fleet over several scenarios, or size it with `loadtest plan --fleet`)"),
                );
            }
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
            substatus: self.substatus(&e.substatus, &format!("{key}.substatus"))?,
            substatus_again: self
                .substatus(&e.substatus_again, &format!("{key}.substatus_again"))?,
        })
    }

    fn substatus(&self, s: &Option<Spanned<String>>, key: &str) -> Result<Option<String>> {
        const SUBSTATUSES: [&str; 4] = [
            "initialAssignment",
            "deviceDataMigrated",
            "deviceDataReset",
            "reprovisionedToInitialAssignment",
        ];
        match s {
            None => Ok(None),
            Some(v) if SUBSTATUSES.contains(&v.get_ref().as_str()) => Ok(Some(v.get_ref().clone())),
            Some(v) => self.err(
                v.span(),
                key,
                format!(
                    "unknown substatus `{}`; choose from: {}",
                    v.get_ref(),
                    SUBSTATUSES.join(", ")
                ),
            ),
        }
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
}
