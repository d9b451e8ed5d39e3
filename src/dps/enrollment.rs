//! Enrollment resolution, the one copy every side calls: which enrollment a registration ID
//! belongs to (an individual enrollment wins over the group, IDs compare case-insensitively), its
//! keys, the device ID DPS assigns, whether it is disabled, its reprovision policy, initial twin
//! and the hubs it offers the webhook. The webhook driver, the device drivers, the emulator and
//! `loadtest keys export` all go through [`Enrollment::resolve`].
//!
//! Pure: no I/O. Keys are decoded (and the group's HMAC prepared) once, in [`Enrollment::new`].

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use crate::device::keys::{decode_key, GroupKey, KeyError};
use crate::dps::allocation::{EnrollmentRecord, ReprovisionPolicy};
use crate::secret::Secret;

/// An enrollment group.
#[derive(Debug, Clone)]
pub struct Group {
    /// The record sent to the webhook (no keys).
    pub record: EnrollmentRecord,
    /// Primary key.
    pub primary_key: Secret,
    /// Secondary key.
    pub secondary_key: Option<Secret>,
    /// The enrollment's initial twin.
    pub initial_twin: Option<Value>,
    /// Hubs offered to the webhook.
    pub offered_hubs: Vec<String>,
}

/// An individual enrollment.
#[derive(Debug, Clone)]
pub struct Individual {
    /// Its registration ID.
    pub registration_id: String,
    /// The record sent to the webhook.
    pub record: EnrollmentRecord,
    /// Primary key (used directly as the device key).
    pub primary_key: Secret,
    /// Secondary key.
    pub secondary_key: Option<Secret>,
    /// Device ID DPS assigns (defaults to the registration ID).
    pub device_id: String,
    /// The enrollment's initial twin.
    pub initial_twin: Option<Value>,
    /// Hubs offered to the webhook.
    pub offered_hubs: Vec<String>,
}

/// Keys decoded once.
#[derive(Debug, Clone)]
struct Keys {
    group: Option<(GroupKey, Option<GroupKey>)>,
    /// Per individual enrollment, in order: raw primary and secondary keys.
    individuals: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The enrollment group and individual enrollments of one DPS instance.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The group, if any device registers through one.
    pub group: Option<Group>,
    /// Individual enrollments (they take precedence over the group, as in DPS).
    pub individuals: Vec<Individual>,
    /// Hubs linked to the DPS instance.
    pub linked_hubs: Vec<String>,
    /// Lower-cased registration ID → index in `individuals` (the first of duplicates wins).
    index: HashMap<String, usize>,
    keys: Keys,
}

/// Which enrollment a device registers through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The individual enrollment with this index.
    Individual(usize),
    /// The enrollment group.
    Group,
}

/// A registration ID resolved to its enrollment.
#[derive(Debug, Clone)]
pub struct Enrollee<'a> {
    /// Which enrollment.
    pub via: Via,
    /// The record DPS sends to the webhook.
    pub record: &'a EnrollmentRecord,
    /// The device ID DPS assigns.
    pub device_id: &'a str,
    /// `provisioningStatus == "disabled"` (group or individual): DPS answers `disabled` without
    /// calling the webhook.
    pub disabled: bool,
    /// The enrollment's reprovision policy.
    pub reprovision: ReprovisionPolicy,
    /// The enrollment's initial twin.
    pub initial_twin: Option<&'a Value>,
    /// The hubs offered to the webhook.
    pub offered_hubs: &'a [String],
    keys: KeyRef<'a>,
}

#[derive(Debug, Clone, Copy)]
enum KeyRef<'a> {
    Individual(&'a [u8], Option<&'a [u8]>),
    Group(&'a GroupKey, Option<&'a GroupKey>),
}

/// Which of an enrollment's two keys signed a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhichKey {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

impl Enrollment {
    /// Builds the resolver; decodes every key once.
    pub fn new(
        group: Option<Group>,
        individuals: Vec<Individual>,
        linked_hubs: Vec<String>,
    ) -> Result<Self, KeyError> {
        let group_keys = group
            .as_ref()
            .map(|g| {
                Ok::<_, KeyError>((
                    GroupKey::new(g.primary_key.expose())?,
                    g.secondary_key
                        .as_ref()
                        .map(|k| GroupKey::new(k.expose()))
                        .transpose()?,
                ))
            })
            .transpose()?;
        let individual_keys = individuals
            .iter()
            .map(|i| {
                Ok((
                    decode_key(i.primary_key.expose())?,
                    i.secondary_key
                        .as_ref()
                        .map(|k| decode_key(k.expose()))
                        .transpose()?,
                ))
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let index = individuals
            .iter()
            .enumerate()
            .rev() // the first of duplicate IDs wins, as a linear search would find it
            .map(|(i, e)| (e.registration_id.to_ascii_lowercase(), i))
            .collect();
        Ok(Self {
            group,
            individuals,
            linked_hubs,
            index,
            keys: Keys {
                group: group_keys,
                individuals: individual_keys,
            },
        })
    }

    /// The individual enrollment of a registration ID, if any.
    pub fn individual(&self, registration_id: &str) -> Option<&Individual> {
        self.index_of(registration_id).map(|i| &self.individuals[i])
    }

    fn index_of(&self, registration_id: &str) -> Option<usize> {
        if self.individuals.is_empty() {
            return None;
        }
        // IDs are short; lower-casing one is cheaper than a case-insensitive hasher.
        self.index
            .get(&registration_id.to_ascii_lowercase())
            .copied()
    }

    /// The enrollment a registration ID registers through, or `None` when no enrollment covers
    /// it (DPS then refuses the device: unknown registration).
    pub fn resolve<'a>(&'a self, registration_id: &'a str) -> Option<Enrollee<'a>> {
        if let Some(i) = self.index_of(registration_id) {
            let e = &self.individuals[i];
            let (p, s) = &self.keys.individuals[i];
            return Some(Enrollee {
                via: Via::Individual(i),
                record: &e.record,
                device_id: &e.device_id,
                disabled: e.record.is_disabled(),
                reprovision: e.record.reprovision_policy,
                initial_twin: e.initial_twin.as_ref(),
                offered_hubs: &e.offered_hubs,
                keys: KeyRef::Individual(p, s.as_deref()),
            });
        }
        let g = self.group.as_ref()?;
        let (p, s) = self.keys.group.as_ref()?;
        Some(Enrollee {
            via: Via::Group,
            record: &g.record,
            // Group devices get their registration ID as device ID.
            device_id: registration_id,
            disabled: g.record.is_disabled(),
            reprovision: g.record.reprovision_policy,
            initial_twin: g.initial_twin.as_ref(),
            offered_hubs: &g.offered_hubs,
            keys: KeyRef::Group(p, s.as_ref()),
        })
    }
}

impl Enrollee<'_> {
    /// The device's raw primary key: the individual key, or derived from the group key for the
    /// registration ID as the device spells it (DPS's case handling there is UNCONFIRMED).
    pub fn device_key(&self, registration_id: &str) -> Vec<u8> {
        match self.keys {
            KeyRef::Individual(p, _) => p.to_vec(),
            KeyRef::Group(g, _) => g.derive_raw(registration_id).to_vec(),
        }
    }

    /// The device's primary key in base64, as `loadtest keys export` writes it.
    pub fn device_key_base64(&self, registration_id: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.device_key(registration_id))
    }

    /// Which of the two keys `verify` accepts (tried primary first), if either.
    pub fn which_key(
        &self,
        registration_id: &str,
        verify: impl Fn(&[u8]) -> bool,
    ) -> Option<WhichKey> {
        match self.keys {
            KeyRef::Individual(p, s) => {
                if verify(p) {
                    Some(WhichKey::Primary)
                } else if s.is_some_and(&verify) {
                    Some(WhichKey::Secondary)
                } else {
                    None
                }
            }
            KeyRef::Group(p, s) => {
                if verify(&p.derive_raw(registration_id)) {
                    Some(WhichKey::Primary)
                } else if s.is_some_and(|k| verify(&k.derive_raw(registration_id))) {
                    Some(WhichKey::Secondary)
                } else {
                    None
                }
            }
        }
    }
}
