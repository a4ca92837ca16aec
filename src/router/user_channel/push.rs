//! XEP-0357 Push Notifications as the user's UserChannel runs them (the protocol is
//! `modules/push.rs`): the enable and disable IQs, and the push when a message arrives
//! that no client of the user will see now.

use std::time::Instant;

use jid::Jid;
use minidom::Element;

use super::UserChannel;
use crate::modules::push::{self, Registration};
use crate::router::UserMsg;
use crate::stanza::{Stanza, StanzaError};

impl UserChannel {
    async fn push_registrations(&mut self) -> Result<&mut Vec<Registration>, StanzaError> {
        if self.push.is_none() {
            let stored = self.core.storage.doc_get(self.jid.to_string(), push::KEY.into()).await.map_err(|e| {
                log::error!("{}: push registrations not read: {e}", self.jid);
                StanzaError::ServiceUnavailable
            })?;
            // Unreadable is refused, not taken as none: the next change would overwrite them.
            let list = stored.map(|json| serde_json::from_str(&json)).transpose().map_err(|e| {
                log::error!("{}: push registrations unreadable: {e}", self.jid);
                StanzaError::ServiceUnavailable
            })?;
            self.push = Some(list.unwrap_or_default());
        }
        Ok(self.push.as_mut().expect("loaded above"))
    }

    /// `<enable/>` and `<disable/>` (§5, §6), stored before they are answered.
    pub(super) async fn push_answer(&mut self, type_: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        if type_ != "set" {
            return Err(StanzaError::BadRequest);
        }
        let change = push::parse(payload, &self.core.cfg.domain)?;
        let max = self.core.cfg.limits.push_services_max;
        let mut list = self.push_registrations().await?.clone();
        if !push::apply(&mut list, change, max) {
            return Err(StanzaError::ResourceConstraint);
        }
        let json = serde_json::to_string(&list).expect("registrations serialise");
        if let Err(e) = self.core.storage.doc_put(self.jid.to_string(), push::KEY.into(), Some(json)).await {
            log::error!("{}: push registrations not stored: {e}", self.jid);
            return Err(StanzaError::ServiceUnavailable);
        }
        self.push = Some(list);
        Ok(None)
    }

    /// §7: `stanza` will not be seen now; each registered app server is told, at the pace
    /// `push_notifications_per_user_per_minute` allows.
    pub(super) async fn push_notify(&mut self, stanza: &Stanza) {
        if !push::worth_a_push(stanza) {
            return;
        }
        let Ok(registrations) = self.push_registrations().await else { return };
        if registrations.is_empty() {
            return;
        }
        let registrations = registrations.clone();
        let per_minute = self.core.cfg.limits.push_notifications_per_user_per_minute;
        let Some(count) = self.core.push_limiter.allow(&self.jid, per_minute, Instant::now()) else { return };
        let sender = stanza.from.to_bare().to_string();
        for r in &registrations {
            if let Some(iq) = push::notification(r, Jid::from(self.bare.clone()), count, &sender) {
                self.core.send_to_user(iq.to_bare().to_string().into(), UserMsg::Inbound(iq)).await;
            }
        }
    }
}
