//! XEP-0012 Last Activity as the user's UserChannel runs it (the protocol is
//! `modules/last.rs`): who may ask, what an online user answers, and the record of each
//! logout.

use jid::Jid;
use minidom::Element;

use super::UserChannel;
use crate::modules::last::{self, Logout};
use crate::modules::pep::Reader;
use crate::stanza::StanzaError;

impl UserChannel {
    /// §3: to the user and to contacts allowed to see the user's presence (subscription
    /// `from` or `both`, not blocked; §8), else `<forbidden/>`. A user with an available
    /// resource (that the asker may see: invisible ones are not, XEP-0186) answers 0.
    pub(super) async fn last_activity(&self, from: &Jid, type_: &str) -> Result<Option<Element>, StanzaError> {
        if type_ != "get" {
            return Err(StanzaError::BadRequest);
        }
        let reader = self.pep_reader(from);
        if reader == Reader::Other {
            return Err(StanzaError::Forbidden);
        }
        if self.resources.iter().any(|r| r.available && (reader == Reader::Owner || !r.invisible)) {
            return Ok(Some(last::query(0, "")));
        }
        let stored = self.core.storage.doc_get(self.jid.to_string(), last::KEY.into()).await.map_err(|e| {
            log::error!("{}: last activity not read: {e}", self.jid);
            StanzaError::ServiceUnavailable
        })?;
        // Never logged out since this was recorded: nothing to tell.
        let logout = stored.as_deref().and_then(Logout::parse).ok_or(StanzaError::ItemNotFound)?;
        Ok(Some(logout.answer(std::time::SystemTime::now())))
    }

    /// Records a logout once the user's last available resource is gone, with the status
    /// of its unavailable presence (`None`: the connection ended without one).
    pub(super) async fn note_logout(&self, presence: Option<&Element>) {
        if self.resources.iter().any(|r| r.available) {
            return;
        }
        let stored = Logout::now(presence).stored();
        if let Err(e) = self.core.storage.doc_put(self.jid.to_string(), last::KEY.into(), Some(stored)).await {
            log::error!("{}: last activity not stored: {e}", self.jid);
        }
    }
}
