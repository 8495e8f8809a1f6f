//! Sticky ownership: which environment owns each Stripe object an event carried. Written with the
//! event that claimed it (before its commit point, so a durable event implies its claims), read
//! when no rule routes a later event, expired by retention.

use crate::record::{Claims, Owner};
use crate::{encode, Result, Store};

/// Where an owners listing or retention pass stopped: the next starts after this object id.
pub type OwnerCursor = String;

/// A page of owned objects and where the next one starts.
pub type OwnersPage = (Vec<(String, Owner)>, Option<OwnerCursor>);

impl Store {
    /// Who owns the object `id`, if anyone (expired entries included until retention removes them).
    /// An entry that does not decode is quarantined and counts as no owner: the event is routed
    /// by the rules and the default, rather than refused for good.
    pub fn owner(&self, id: &str) -> Result<Option<Owner>> {
        match self.owners.get(id.as_bytes())? {
            Some(value) => self.decoded(&self.owners, id.as_bytes(), &value, "owner"),
            None => Ok(None),
        }
    }

    /// Records `owner` for each of `ids` (the latest claim wins). Not durable until
    /// [`Store::durable`].
    pub fn claim(&self, ids: &[String], owner: &Owner) -> Result<()> {
        let value = encode(owner)?;
        for id in ids {
            self.owners.insert(id.as_bytes(), value.as_slice())?;
        }
        Ok(())
    }

    /// Records an ingest's claims, skipping ids already owned the same way and claimed recently.
    pub(crate) fn claim_unless_fresh(&self, claims: &Claims) -> Result<()> {
        let value = encode(&claims.owner)?;
        for id in &claims.ids {
            let existing = match self.owners.get(id.as_bytes())? {
                Some(value) => self.decoded::<Owner>(&self.owners, id.as_bytes(), &value, "owner")?,
                None => None,
            };
            if let Some(existing) = existing {
                let same = existing.destinations == claims.owner.destinations && existing.via == claims.owner.via;
                if same && claims.owner.at_ms < existing.at_ms.saturating_add(claims.refresh_after_ms) {
                    continue;
                }
            }
            self.owners.insert(id.as_bytes(), value.as_slice())?;
        }
        Ok(())
    }

    /// Forgets who owns `id`; false if nobody did.
    pub fn disown(&self, id: &str) -> Result<bool> {
        Ok(self.owners.remove(id.as_bytes())?.is_some())
    }

    /// Up to `limit` owned objects in id order, after `after`; `destination` keeps only its
    /// objects. Looks at no more than `scan` entries, and says where to go on.
    pub fn owners_page(
        &self,
        after: Option<&str>,
        destination: Option<&str>,
        limit: usize,
        scan: usize,
    ) -> Result<OwnersPage> {
        let mut page = Vec::new();
        let mut last = None;
        let start = after.map(|a| [a.as_bytes(), &[0]].concat()).unwrap_or_default();
        for entry in self.owners.range(start..).take(scan) {
            let (key, value) = entry?;
            let id = String::from_utf8_lossy(&key).into_owned();
            last = Some(id.clone());
            let Some(owner) = self.decoded::<Owner>(&self.owners, &key, &value, "owner")? else { continue };
            if destination.is_none_or(|d| owner.destinations.iter().any(|o| o == d)) {
                page.push((id, owner));
                if page.len() >= limit {
                    break;
                }
            }
        }
        let more = match &last {
            Some(l) => self.owners.range([l.as_bytes(), &[0]].concat()..).next().is_some(),
            None => false,
        };
        Ok((page, if more { last } else { None }))
    }

    /// Removes up to `batch` claims last made before `cutoff_ms`, looking at `batch` entries from
    /// `after` on; returns how many went and where the next pass starts (none: back to the start).
    /// Ownership is keyed by object id, not time, so retention walks it a slice at a time.
    pub fn purge_owners_before(
        &self,
        cutoff_ms: u64,
        after: Option<&str>,
        batch: usize,
    ) -> Result<(usize, Option<OwnerCursor>)> {
        let start = after.map(|a| [a.as_bytes(), &[0]].concat()).unwrap_or_default();
        let (mut purged, mut seen, mut last) = (0, 0, None);
        for entry in self.owners.range(start..).take(batch) {
            let (key, value) = entry?;
            seen += 1;
            last = Some(String::from_utf8_lossy(&key).into_owned());
            let Some(owner) = self.decoded::<Owner>(&self.owners, &key, &value, "owner")? else { continue };
            if owner.at_ms < cutoff_ms && self.owners.compare_and_swap(&key, Some(value), None::<&[u8]>)?.is_ok() {
                purged += 1;
            }
        }
        Ok((purged, if seen == batch { last } else { None }))
    }
}
