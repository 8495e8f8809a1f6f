//! `/inboxes`: developers' inboxes created at run time (`fanout inbox …`). The token is in the
//! answer to a create or a rotation and nowhere else.

use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::{Admin, Answer};
use crate::http::{json, read_body, ApiError};
use crate::inboxes::{Credentials, InboxAdminError, NewInbox};
use crate::wire::admin::{CreateInbox, InboxCredentials, InboxDeleted, InboxOut, InboxesList};
use crate::wire::time;

/// A create request is a name and a few settings.
const MAX_CREATE_BYTES: usize = 4096;

impl Admin {
    pub(super) async fn create_inbox(&self, req: Request<Incoming>) -> Answer {
        let config = self.live.load_full();
        let (parts, body) = req.into_parts();
        let body = read_body(&parts.headers, body, MAX_CREATE_BYTES, config.body_read_timeout).await?;
        let ask: CreateInbox = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("expected {{\"name\": \"alice\", \"max_age\": \"1d\", ...}}: {e}"))
        })?;
        let duration = |key: &str, v: &Option<String>| -> Result<Option<Duration>, ApiError> {
            v.as_deref()
                .map(|v| humantime::parse_duration(v).map_err(|e| ApiError::bad_request(format!("{key} {v:?}: {e}"))))
                .transpose()
        };
        let new = NewInbox {
            max_age: duration("max_age", &ask.max_age)?,
            offline_after: duration("offline_after", &ask.offline_after)?.or(
                // A fallback without a wait moves events the moment the laptop sleeps.
                ask.offline_fallback.as_ref().map(|_| Duration::from_secs(600)),
            ),
            offline_fallback: ask.offline_fallback,
            name: ask.name,
        };
        let created = self.inboxes.create(new).await.map_err(refused)?;
        Ok(json(StatusCode::CREATED, &shown(created)))
    }

    pub(super) async fn rotate_inbox(&self, name: &str) -> Answer {
        let rotated = self.inboxes.rotate(name).await.map_err(refused)?;
        Ok(json(StatusCode::OK, &shown(rotated)))
    }

    pub(super) async fn delete_inbox(&self, name: &str) -> Answer {
        let queued = self.store.queued(name).await? as i64;
        self.inboxes.delete(name).await.map_err(refused)?;
        Ok(json(StatusCode::OK, &InboxDeleted { inbox: name.to_owned(), queued_to_dead_letters: queued }))
    }

    /// Every inbox, of routing.yaml and created at run time, with its presence and queue.
    pub(super) async fn list_inboxes(&self) -> Answer {
        let config = self.live.load_full();
        let counts = self.store.counts().await?;
        let status = self.deliveries.status();
        let created = self.inboxes.created_at();
        let inboxes = config
            .targets
            .iter()
            .filter(|t| t.is_inbox())
            .map(|t| {
                let presence = status.get(&t.name).and_then(|s| s.inbox.clone()).unwrap_or_default();
                InboxOut {
                    name: t.name.clone(),
                    created_at_run_time: t.is_created_inbox(),
                    created_at: created.iter().find(|(n, _)| n == &t.name).map(|(_, at)| time(*at)),
                    online: presence.online,
                    listeners: presence.listeners,
                    queued: counts.queued.get(&t.name).copied().unwrap_or(0),
                }
            })
            .collect();
        Ok(json(StatusCode::OK, &InboxesList { inboxes }))
    }
}

fn shown(c: Credentials) -> InboxCredentials {
    InboxCredentials { inbox: c.name, token: c.token, secret: c.secret }
}

fn refused(e: InboxAdminError) -> ApiError {
    match e {
        InboxAdminError::Invalid(m) => ApiError::bad_request(m),
        InboxAdminError::Taken(m) => ApiError::conflict(m),
        InboxAdminError::NotFound(_) => ApiError::not_found(e.to_string()),
        InboxAdminError::Store(e) => e.into(),
        InboxAdminError::Random(_) => ApiError::internal("cannot create the inbox", &e),
    }
}
