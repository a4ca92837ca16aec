//! XEP-0163 PEP as the owner's UserChannel runs it (the protocol is `modules/pep.rs`): the
//! owner's requests, others' reads, event notifications to the owner's resources and to
//! the contacts subscribed to the owner's presence, and the last items for a resource that
//! came to want a node (§4.3.4). Which of a user's resources get an event is decided by
//! that user's own UserChannel, which knows their `+notify` interests.

use std::sync::Arc;

use jid::Jid;
use minidom::Element;

use super::UserChannel;
use crate::modules::entity_caps::Interests;
use crate::modules::pep::{self, Access, Reader, Request};
use crate::router::UserMsg;
use crate::stanza::{Kind, Stanza, StanzaError};
use crate::storage::Subscription;

impl UserChannel {
    /// Who `jid` is to this user's PEP service.
    pub(super) fn pep_reader(&self, jid: &Jid) -> Reader {
        let bare = jid.to_bare();
        if bare == self.bare {
            return Reader::Owner;
        }
        let subscribed = self.roster.get(bare.as_str()).is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both));
        if subscribed && !self.blocked.blocks(jid) {
            Reader::Subscriber
        } else {
            Reader::Other
        }
    }

    /// The owner's pubsub IQs to its own account.
    pub(super) async fn pep_owner_answer(&mut self, type_: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        let request = pep::parse(type_, payload, &self.core.cfg.limits)?;
        let node = request.node().to_owned();
        let storage = &self.core.storage;
        match request {
            Request::Publish { .. } => {
                let published = self.pep.publish(storage, &self.jid, &self.core.cfg.limits, request).await?;
                self.pep_notify(&node, published.access, published.event).await;
                Ok(Some(published.result))
            }
            Request::Retract { .. } => {
                if let Some((event, access)) = self.pep.retract(storage, &self.jid, request).await? {
                    self.pep_notify(&node, access, event).await;
                }
                Ok(None)
            }
            Request::Items { .. } => self.pep_items(Reader::Owner, request).await.map(Some),
        }
    }

    /// A pubsub IQ from someone else: items as the node's access model allows; publishing
    /// and retracting are the owner's alone (XEP-0060 §7.1.3.1, §7.2.3.1).
    pub(super) async fn pep_answer_other(&mut self, from: &Jid, type_: &str, payload: &Element) -> Result<Option<Element>, StanzaError> {
        if payload.children().any(|c| matches!(c.name(), "publish" | "retract")) {
            return Err(StanzaError::Forbidden);
        }
        let request = pep::parse(type_, payload, &self.core.cfg.limits)?;
        let reader = self.pep_reader(from);
        self.pep_items(reader, request).await.map(Some)
    }

    /// XEP-0060 §6.5 items for `reader`, counting the payloads read.
    async fn pep_items(&mut self, reader: Reader, request: Request) -> Result<Element, StanzaError> {
        let (items, read) = self.pep.items(&self.core.storage, &self.jid, reader, request).await?;
        self.core.counters.pep_items_read.add(read as u64);
        Ok(items)
    }

    /// Event notifications (§4.3): to the owner's resources that want `node`, and, unless
    /// the node is the owner's alone, to each contact subscribed to the owner's presence,
    /// whose UserChannel picks the resources.
    async fn pep_notify(&self, node: &str, access: Access, event: Element) {
        let message = pep::notification(event);
        let me = Jid::from(self.bare.clone());
        self.pep_event(node, &Stanza::seal(Kind::Message, message.clone(), me.clone(), me.clone())).await;
        if access.admits(Reader::Subscriber).is_err() {
            return;
        }
        for contact in self.subscribers() {
            let stanza = Stanza::seal(Kind::Message, message.clone(), me.clone(), contact);
            self.core.send_to_user(stanza.to.to_string().into(), UserMsg::PepEvent { node: node.into(), stanza }).await;
        }
    }

    /// Delivers an event to this user's available resources that want `node` — to the one
    /// `stanza.to` names, if it names one — unless the user blocked its sender.
    pub(super) async fn pep_event(&self, node: &str, stanza: &Stanza) {
        if !self.exists || self.blocked.blocks(&stanza.from) {
            return;
        }
        let only = stanza.to_resource();
        for idx in 0..self.resources.len() {
            let r = &self.resources[idx];
            if r.available && r.pep_interest.iter().any(|n| &**n == node) && only.is_none_or(|o| o == &*r.name) {
                let copy = stanza.readdressed(self.full_jid(&r.name));
                self.deliver(idx, copy.xml).await;
            }
        }
    }

    /// A resource's client now wants events from `nodes`; if it is online, it gets the
    /// last item of those it did not want before.
    pub(super) async fn pep_interest(&mut self, resource: &str, nodes: Interests) {
        let Some(idx) = self.index_of(resource) else { return };
        let before = std::mem::replace(&mut self.resources[idx].pep_interest, nodes.clone());
        if self.resources[idx].available {
            let gained: Interests = nodes.iter().filter(|n| !before.contains(n)).cloned().collect();
            self.pep_request_last(idx, gained).await;
        }
    }

    /// §4.3.4: asks each PEP service the resource may read — its own account's, and those
    /// of the contacts whose presence the user is subscribed to (`to`, `both`) — for the
    /// last items of `nodes`. Each service checks its own roster before it answers.
    pub(super) async fn pep_request_last(&mut self, idx: usize, nodes: Interests) {
        if nodes.is_empty() {
            return;
        }
        let to: Arc<str> = self.full_jid(&self.resources[idx].name).to_string().into();
        self.pep_send_last(&to, &nodes).await;
        let services: Vec<Arc<str>> =
            self.roster.values().filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both)).map(|i| i.jid.as_str().into()).collect();
        for service in services {
            self.core.send_to_user(service, UserMsg::PepLast { to: to.clone(), nodes: nodes.clone() }).await;
        }
    }

    /// §4.3.4: the last item of each of `nodes` that `to` (a full JID) may see, to it alone.
    pub(super) async fn pep_send_last(&mut self, to: &str, nodes: &[Arc<str>]) {
        let Ok(to) = Jid::new(to) else { return };
        let reader = self.pep_reader(&to);
        if reader == Reader::Other || !self.exists {
            return; // notifications go to the owner and presence subscribers only
        }
        let me = Jid::from(self.bare.clone());
        for node in nodes {
            let Ok(Some(stored)) = self.pep.node(&self.core.storage, &self.jid, node).await else { continue };
            if !stored.send_last || stored.access.admits(reader).is_err() {
                continue;
            }
            let Some(event) = self.pep.last_item_event(&self.core.storage, &self.jid, node, &stored).await else { continue };
            self.core.counters.pep_items_read.inc();
            let stanza = Stanza::seal(Kind::Message, pep::notification(event), me.clone(), to.clone());
            if reader == Reader::Owner {
                self.pep_event(node, &stanza).await;
            } else {
                let user = stanza.to_bare().to_string().into();
                self.core.send_to_user(user, UserMsg::PepEvent { node: node.clone(), stanza }).await;
            }
        }
    }
}
