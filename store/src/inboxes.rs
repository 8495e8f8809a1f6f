//! Inboxes created at run time, in the sled engine: one tree, name -> record as JSON. Creation is
//! a compare-and-swap, so two operators creating one name at once get one inbox and one refusal.

use crate::{InboxRecord, Result, Store, StoreError};

fn to_json(inbox: &InboxRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(inbox).map_err(|e| StoreError::Corrupt { what: "to write", detail: e.to_string() })
}

impl Store {
    /// Every inbox, by name. One that does not decode is quarantined and left out.
    pub fn inboxes(&self) -> Result<Vec<InboxRecord>> {
        let mut all = Vec::new();
        for item in self.inboxes.iter() {
            let (key, value) = item?;
            match serde_json::from_slice(&value) {
                Ok(inbox) => all.push(inbox),
                Err(e) => {
                    let error = StoreError::Corrupt { what: "inbox", detail: e.to_string() };
                    self.quarantine(&self.inboxes, &key, &value, &error)?
                }
            }
        }
        Ok(all)
    }

    /// `false` if an inbox of that name exists already.
    pub fn create_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        let swapped = self.inboxes.compare_and_swap(inbox.name.as_bytes(), None::<&[u8]>, Some(to_json(inbox)?))?;
        Ok(swapped.is_ok())
    }

    /// Rewrites an existing inbox (a rotation); `false` if there is none of that name.
    pub fn replace_inbox(&self, inbox: &InboxRecord) -> Result<bool> {
        let Some(old) = self.inboxes.get(inbox.name.as_bytes())? else { return Ok(false) };
        Ok(self.inboxes.compare_and_swap(inbox.name.as_bytes(), Some(old), Some(to_json(inbox)?))?.is_ok())
    }

    /// `false` if there was none of that name.
    pub fn delete_inbox(&self, name: &str) -> Result<bool> {
        Ok(self.inboxes.remove(name.as_bytes())?.is_some())
    }
}
