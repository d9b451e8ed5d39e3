//! `loadtest setup SCENARIO`: creates or updates the scenario's enrollment group and individual
//! enrollments on a DPS (the service API, `DPS_SERVICE_CONNECTION_STRING`): custom allocation to
//! the scenario's webhook URL with its `apiVersion`, the hubs, reprovision policy, initial twin,
//! status and keys. Idempotent: an enrollment that already says the same is left alone, one that
//! differs is updated under its ETag. `--dry-run` prints the JSON it would send, keys and the
//! function key masked, and sends nothing. Linking the hubs to the DPS instance is not part of
//! the service API (it is the resource's configuration): the output says so.

use std::fmt::Write as _;

use super::{expect, Credentials, LifecycleError, ServiceClient};
use crate::dps::service::{EnrollmentDoc, DPS_API_VERSION};
use crate::scenario::Scenario;

/// What setup did with one enrollment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// It did not exist.
    Created,
    /// It differed.
    Updated,
    /// It already said the same.
    Unchanged,
    /// `--dry-run`.
    WouldSend,
}

/// The enrollment documents of a scenario, calling `webhook_url`: `(path, id, document)`.
pub(crate) fn documents(s: &Scenario, webhook_url: &str) -> Vec<(String, String, EnrollmentDoc)> {
    let mut out = Vec::new();
    if let Some(g) = &s.enrollment.group {
        let id = g.record.enrollment_group_id.clone().unwrap_or_default();
        out.push((
            format!("/enrollmentGroups/{}", crate::sas::url_encode(&id)),
            id,
            EnrollmentDoc::of_group(g, webhook_url),
        ));
    }
    for i in &s.enrollment.individuals {
        out.push((
            format!(
                "/enrollments/{}",
                crate::sas::url_encode(&i.registration_id)
            ),
            i.registration_id.clone(),
            EnrollmentDoc::of_individual(i, webhook_url),
        ));
    }
    out
}

/// The document without what the service sets (ETag, times), for comparing.
fn comparable(d: &EnrollmentDoc) -> EnrollmentDoc {
    EnrollmentDoc {
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        ..d.clone()
    }
}

/// Runs setup; returns one line per enrollment (and the dry run's JSON).
pub(crate) async fn setup(
    s: &Scenario,
    dps: &Credentials,
    client: Option<&ServiceClient>,
    webhook_url: &str,
) -> Result<(Vec<(String, Action)>, String), LifecycleError> {
    let docs = documents(s, webhook_url);
    if docs.is_empty() {
        return Err(LifecycleError::Config(format!(
            "scenario {} has no enrollment to set up",
            s.name
        )));
    }
    let mut text = String::new();
    let mut done = Vec::new();
    for (path, id, doc) in docs {
        let url = format!("{path}?api-version={DPS_API_VERSION}");
        let Some(client) = client else {
            let _ = writeln!(
                text,
                "PUT https://{}{url}\n{}",
                dps.host,
                serde_json::to_string_pretty(&doc.masked()).expect("serialisable")
            );
            done.push((id, Action::WouldSend));
            continue;
        };
        let got = client.call(dps, "GET", &url, &[], None).await?;
        let existing: Option<EnrollmentDoc> = match got.status {
            404 => None,
            _ => {
                let a = expect(got, &[200], "GET", &url, &dps.host)?;
                Some(serde_json::from_slice(&a.body).map_err(|e| {
                    LifecycleError::Config(format!(
                        "{id}: the service's enrollment is not JSON: {e}"
                    ))
                })?)
            }
        };
        // A key the scenario leaves out is the service's to choose: not a difference.
        let same = |e: &EnrollmentDoc| {
            let mut e = comparable(e);
            if let (Some(theirs), Some(ours)) = (
                e.attestation.symmetric_key.as_mut(),
                doc.attestation.symmetric_key.as_ref(),
            ) {
                if ours.secondary_key.is_none() {
                    theirs.secondary_key = None;
                }
            }
            e == comparable(&doc)
        };
        let action = match &existing {
            Some(e) if same(e) => Action::Unchanged,
            Some(_) => Action::Updated,
            None => Action::Created,
        };
        if action != Action::Unchanged {
            let headers: Vec<(&str, String)> = existing
                .as_ref()
                .and_then(|e| e.etag.clone())
                .map(|t| ("If-Match", t))
                .into_iter()
                .collect();
            let body = serde_json::to_vec(&doc).expect("serialisable");
            let put = client.call(dps, "PUT", &url, &headers, Some(body)).await?;
            expect(put, &[200, 201], "PUT", &url, &dps.host)?;
        }
        done.push((id, action));
    }
    Ok((done, text))
}
