//! The emulator's enrollments as they stand: the resolver ([`Enrollment`]), the AllocationRequest
//! templates built once per enrollment, the webhook client of each enrollment's custom
//! allocation, and the service API's documents with their ETags. A [`Live`] is never changed:
//! the service API builds the next one and swaps it in whole, so a registration under way keeps
//! the enrollments it started with. Keeps no registrations (those are the store's).

use std::collections::HashMap;
use std::sync::Arc;

use crate::dps::allocation::RequestTemplate;
use crate::dps::enrollment::{Enrollment, Via};
use crate::dps::service::EnrollmentDoc;
use crate::webhook::client::WebhookClient;

/// The URL shown for the embedded reference webhook called in-process (a GET of the scenario's
/// group returns it; a PUT of it keeps the in-process call).
pub(super) const IN_PROCESS_URL: &str = "http://in-process.loadtest.invalid/api/reference-webhook";

/// One set of enrollments.
pub(super) struct Live {
    /// The resolver.
    pub(super) enrollment: Enrollment,
    group_template: Option<RequestTemplate>,
    individual_templates: Vec<RequestTemplate>,
    /// The group's document, if there is a group.
    pub(super) group_doc: Option<EnrollmentDoc>,
    /// The individual enrollments' documents, in the resolver's order.
    pub(super) individual_docs: Vec<EnrollmentDoc>,
    /// Webhook clients by URL (carried from one `Live` to the next).
    pub(super) webhooks: HashMap<String, Arc<WebhookClient>>,
}

/// What one device's enrollment offers for allocation.
pub(super) struct Resolved<'a> {
    pub(super) template: &'a RequestTemplate,
    pub(super) webhook: Option<&'a Arc<WebhookClient>>,
}

impl Live {
    /// Builds the set from documents; `webhooks` must hold a client for every custom URL.
    pub(super) fn new(
        group_doc: Option<EnrollmentDoc>,
        individual_docs: Vec<EnrollmentDoc>,
        linked_hubs: &[String],
        webhooks: HashMap<String, Arc<WebhookClient>>,
    ) -> Result<Self, String> {
        let group = group_doc.as_ref().map(|d| d.group(linked_hubs));
        let individuals: Vec<_> = individual_docs
            .iter()
            .map(|d| d.individual(linked_hubs))
            .collect();
        let group_template = group
            .as_ref()
            .map(|g| RequestTemplate::new(&g.record, false, &g.offered_hubs));
        let individual_templates = individuals
            .iter()
            .map(|i| RequestTemplate::new(&i.record, true, &i.offered_hubs))
            .collect();
        let enrollment = Enrollment::new(group, individuals, linked_hubs.to_vec())
            .map_err(|e| format!("attestation.symmetricKey: {e}"))?;
        Ok(Self {
            enrollment,
            group_template,
            individual_templates,
            group_doc,
            individual_docs,
            webhooks,
        })
    }

    /// The template and webhook of the enrollment `via`.
    pub(super) fn resolved(&self, via: Via) -> Resolved<'_> {
        let (template, doc) = match via {
            Via::Individual(i) => (&self.individual_templates[i], &self.individual_docs[i]),
            Via::Group => (
                self.group_template
                    .as_ref()
                    .expect("group devices have a group"),
                self.group_doc.as_ref().expect("group devices have a group"),
            ),
        };
        let webhook = doc
            .custom_allocation_definition
            .as_ref()
            .and_then(|c| self.webhooks.get(&c.webhook_url));
        Resolved { template, webhook }
    }
}
