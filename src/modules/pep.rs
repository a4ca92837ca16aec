//! XEP-0163 Personal Eventing Protocol: every account is a small XEP-0060 pubsub service at
//! its bare JID. The owner publishes and retracts; whoever the node's access model lets in
//! reads the items; contacts subscribed to the owner's presence (and the owner's own
//! resources) get event notifications for the nodes their client's caps ask for with
//! `+notify` (XEP-0163 §4.3.2 filtered notifications, resolved by
//! [`super::entity_caps`]), and the last item of each when they come online (§4.3.4).
//!
//! This file is the protocol and the stored form; the owner's UserChannel
//! (`router/user_channel/pep.rs`) runs it, since only it knows the roster and the sessions.
//! A node is one per-user document (`pep:<node>`) holding its configuration and its items'
//! ids and sizes, each item's payload one more (`item_key`), and the list of node names one
//! more (`pep`): access is decided before any payload is read, and a request reads and
//! writes only the items it names, so its cost does not grow with what the node holds.

use std::collections::BTreeSet;

use minidom::Element;
use serde::{Deserialize, Serialize};
use xmpp_parsers::data_forms::DataForm;
use xmpp_parsers::pubsub::event::{self, Event};
use xmpp_parsers::pubsub::pubsub::{Item, Items, Publish, PublishOptions};
use xmpp_parsers::pubsub::{ItemId, NodeName, PubSub};

use super::avatar;
use crate::config::Limits;
use crate::stanza::{build, to_xml, StanzaError};
use crate::storage::Storage;
use crate::xml::ns;

/// What disco#info on a bare JID lists for PEP (XEP-0060 §10), each served here.
pub const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#multi-items",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// The storage key of the node list.
const INDEX_KEY: &str = "pep";

fn node_key(node: &str) -> String {
    format!("pep:{node}")
}

/// The storage key of one item's payload; the node's length first, so no node name and id
/// can make another's key.
fn item_key(node: &str, id: &str) -> String {
    format!("pep-item:{}:{node}:{id}", node.len())
}

/// XEP-0060 §4.5 access models served. `Presence` is PEP's default (XEP-0163 §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    #[default]
    Presence,
    Open,
    /// With no way to add to the list here, only the owner.
    Whitelist,
}

/// Who asks, as the owner's roster sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Owner,
    /// Subscribed to the owner's presence (`from` or `both`).
    Subscriber,
    Other,
}

impl Access {
    fn parse(value: &str) -> Option<Access> {
        match value {
            "presence" => Some(Access::Presence),
            "open" => Some(Access::Open),
            "whitelist" => Some(Access::Whitelist),
            _ => None,
        }
    }

    /// May `reader` retrieve items, and so get notifications (XEP-0060 §6.5.9)?
    pub fn admits(self, reader: Reader) -> Result<(), StanzaError> {
        match (self, reader) {
            (_, Reader::Owner) | (Access::Open, _) | (Access::Presence, Reader::Subscriber) => Ok(()),
            (Access::Presence, _) => Err(StanzaError::PresenceSubscriptionRequired),
            (Access::Whitelist, _) => Err(StanzaError::ClosedNode),
        }
    }
}

/// A node as stored under `pep:<node>`: its configuration, and its items' ids and sizes,
/// oldest first. Each payload is a document of its own (`item_key`), so a read or a write
/// of one item touches only that one, whatever the node holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub access: Access,
    pub max_items: usize,
    /// XEP-0060 `pubsub#send_last_published_item`: false for `never`.
    pub send_last: bool,
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// The layout before items were stored apart, with every payload inline: split into
    /// that layout on first read (`Service::node`), which keeps nodes stored before.
    #[serde(default, skip_serializing)]
    items: Vec<StoredItem>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Of id and payload: what the item costs against `pep_node_bytes_max`.
    pub bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredItem {
    id: String,
    /// The payload element as XML.
    payload: String,
}

impl Entry {
    fn new(id: &str, payload: &str) -> Entry {
        Entry { id: id.to_owned(), bytes: id.len() + payload.len() }
    }
}

impl Node {
    /// Adds or replaces the entry with `entry.id`, newest last, keeping `max_items`;
    /// returns the ids of the items that made room.
    fn put(&mut self, entry: Entry) -> Vec<String> {
        self.entries.retain(|e| e.id != entry.id);
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(self.max_items);
        self.entries.drain(..excess).map(|e| e.id).collect()
    }

    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }
}

/// What a publish asks of the node: preconditions on an existing one, the configuration
/// of one auto-created (XEP-0060 §7.1.5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    access: Option<Access>,
    max_items: Option<usize>,
    send_last: Option<bool>,
}

impl Options {
    /// A new node with these options (PEP defaults otherwise: presence access, one item).
    fn new_node(&self) -> Node {
        Node {
            access: self.access.unwrap_or_default(),
            max_items: self.max_items.unwrap_or(1),
            send_last: self.send_last.unwrap_or(true),
            entries: Vec::new(),
            items: Vec::new(),
        }
    }

    fn met_by(&self, node: &Node) -> bool {
        self.access.is_none_or(|a| a == node.access)
            && self.max_items.is_none_or(|m| m == node.max_items)
            && self.send_last.is_none_or(|s| s == node.send_last)
    }
}

/// A request to a PEP service.
#[derive(Debug, PartialEq)]
pub enum Request {
    Publish { node: String, id: Option<String>, payload: Element, options: Options },
    Retract { node: String, id: String, notify: bool },
    Items { node: String, max: Option<usize>, ids: Vec<String> },
}

impl Request {
    pub fn node(&self) -> &str {
        match self {
            Request::Publish { node, .. } | Request::Retract { node, .. } | Request::Items { node, .. } => node,
        }
    }
}

/// Reads an IQ's `<pubsub/>`; `limits` bound what a publish may carry and configure.
pub fn parse(type_: &str, payload: &Element, limits: &Limits) -> Result<Request, StanzaError> {
    // xmpp-parsers refuses a missing node as malformed; XEP-0060 names that case.
    if payload.children().any(|c| matches!(c.name(), "publish" | "retract" | "items") && c.attr("node").is_none()) {
        return Err(StanzaError::NodeIdRequired);
    }
    let pubsub = PubSub::try_from(payload.clone()).map_err(|_| StanzaError::BadRequest)?;
    match (type_, pubsub) {
        ("set", PubSub::Publish { publish, publish_options }) => parse_publish(publish, publish_options, limits),
        ("set", PubSub::Retract(retract)) => {
            let mut ids = retract.items.into_iter().map(|i| i.id);
            match (ids.next(), ids.next()) {
                (Some(Some(id)), None) => Ok(Request::Retract { node: retract.node.0, id: id.0, notify: retract.notify }),
                _ => Err(StanzaError::ItemRequired),
            }
        }
        ("get", PubSub::Items(items)) => Ok(Request::Items {
            node: items.node.0,
            max: items.max_items.map(|m| m as usize),
            ids: items.items.into_iter().filter_map(|i| i.id.map(|id| id.0)).collect(),
        }),
        (_, other) => Err(unsupported(&other)),
    }
}

/// The XEP-0060 feature a request we do not serve belongs to (§10); requests of the right
/// kind with the wrong IQ type are malformed.
fn unsupported(request: &PubSub) -> StanzaError {
    match request {
        PubSub::Create { .. } => StanzaError::Unsupported("create-nodes"),
        PubSub::Subscribe { .. } | PubSub::Unsubscribe(_) => StanzaError::Unsupported("subscribe"),
        PubSub::Subscription(_) => StanzaError::Unsupported("subscription-options"),
        PubSub::Subscriptions(_) => StanzaError::Unsupported("retrieve-subscriptions"),
        PubSub::Affiliations(_) => StanzaError::Unsupported("retrieve-affiliations"),
        PubSub::Default(_) => StanzaError::Unsupported("retrieve-default"),
        PubSub::Publish { .. } | PubSub::Retract(_) | PubSub::Items(_) => StanzaError::BadRequest,
    }
}

fn parse_publish(publish: Publish, options: Option<PublishOptions>, limits: &Limits) -> Result<Request, StanzaError> {
    let node = publish.node.0;
    let mut items = publish.items.into_iter();
    let item = match (items.next(), items.next()) {
        (Some(item), None) => item,
        (None, _) => return Err(StanzaError::PayloadRequired),
        (Some(_), Some(_)) => return Err(StanzaError::InvalidPayload), // one item per publish
    };
    let payload = item.payload.ok_or(StanzaError::PayloadRequired)?;
    if to_xml(&payload).len() > limits.pep_item_bytes_max {
        return Err(StanzaError::PayloadTooBig);
    }
    let id = item.id.map(|i| i.0);
    avatar::check(&node, id.as_deref(), &payload)?;
    let options = match options.and_then(|o| o.form) {
        Some(form) => parse_options(&form, limits)?,
        None => Options::default(),
    };
    Ok(Request::Publish { node, id, payload, options })
}

/// The publish-options form (XEP-0060 §7.1.5, XEP-0223): each field a precondition. A
/// field or value we cannot honour fails the precondition rather than be ignored.
fn parse_options(form: &DataForm, limits: &Limits) -> Result<Options, StanzaError> {
    if form.form_type() != Some(ns::PUBSUB_PUBLISH_OPTIONS) {
        return Err(StanzaError::BadRequest);
    }
    let mut options = Options::default();
    for field in form.fields.iter().filter(|f| f.var.as_deref() != Some("FORM_TYPE")) {
        let value = field.values.first().map(String::as_str).unwrap_or("");
        let ok = match field.var.as_deref().unwrap_or("") {
            "pubsub#access_model" => Access::parse(value).map(|a| options.access = Some(a)).is_some(),
            "pubsub#max_items" => {
                let max = if value == "max" { Some(limits.pep_node_items_max) } else { value.parse().ok() };
                let max = max.filter(|&m| (1..=limits.pep_node_items_max).contains(&m));
                max.map(|m| options.max_items = Some(m)).is_some()
            }
            // Every item is kept in storage.
            "pubsub#persist_items" => matches!(value, "1" | "true"),
            "pubsub#send_last_published_item" => match value {
                "never" => Some(false),
                "on_sub" | "on_sub_and_presence" => Some(true),
                _ => None,
            }
            .map(|s| options.send_last = Some(s))
            .is_some(),
            _ => false,
        };
        if !ok {
            return Err(StanzaError::PreconditionNotMet);
        }
    }
    Ok(options)
}

/// A publish applied: what to tell the publisher, and the event for whom may read.
pub struct Published {
    pub result: Element,
    pub event: Element,
    pub access: Access,
}

/// A user's PEP nodes, as its UserChannel holds them: the node list, read on first use,
/// and the bytes all nodes hold, summed on the first publish.
#[derive(Default)]
pub struct Service {
    index: Option<BTreeSet<String>>,
    account_bytes: Option<usize>,
}

fn unavailable(e: crate::storage::StorageError) -> StanzaError {
    log::error!("PEP storage: {e}");
    StanzaError::ServiceUnavailable
}

impl Service {
    async fn index(&mut self, storage: &Storage, owner: &str) -> Result<&mut BTreeSet<String>, StanzaError> {
        let index = match self.index.take() {
            Some(index) => index,
            None => {
                let stored = storage.doc_get(owner.into(), INDEX_KEY.into()).await.map_err(unavailable)?;
                stored.unwrap_or_default().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
            }
        };
        Ok(self.index.insert(index))
    }

    /// The node, if it exists: its configuration and item list, no payload.
    pub async fn node(&mut self, storage: &Storage, owner: &str, name: &str) -> Result<Option<Node>, StanzaError> {
        if !self.index(storage, owner).await?.contains(name) {
            return Ok(None);
        }
        let stored = storage.doc_get(owner.into(), node_key(name)).await.map_err(unavailable)?;
        let Some(json) = stored else { return Ok(None) };
        let mut node = serde_json::from_str::<Node>(&json).map_err(|e| {
            log::error!("{owner}: PEP node {name} unreadable: {e}");
            StanzaError::ServiceUnavailable
        })?;
        if !node.items.is_empty() {
            let items = std::mem::take(&mut node.items);
            node.entries = items.iter().map(|i| Entry::new(&i.id, &i.payload)).collect();
            let mut docs: Vec<_> = items.into_iter().map(|i| (item_key(name, &i.id), Some(i.payload))).collect();
            docs.push((node_key(name), Some(to_json(&node))));
            storage.docs_put(owner.into(), docs).await.map_err(unavailable)?;
        }
        Ok(Some(node))
    }

    /// The payload of one item, parsed; `None` if it is gone or unreadable.
    pub async fn payload(&self, storage: &Storage, owner: &str, node: &str, id: &str) -> Result<Option<Element>, StanzaError> {
        let stored = storage.doc_get(owner.into(), item_key(node, id)).await.map_err(unavailable)?;
        Ok(stored.and_then(|xml| xml.parse().ok()))
    }

    /// What all the owner's nodes hold, in bytes.
    async fn account_bytes(&mut self, storage: &Storage, owner: &str) -> Result<usize, StanzaError> {
        if let Some(bytes) = self.account_bytes {
            return Ok(bytes);
        }
        let names: Vec<String> = self.index(storage, owner).await?.iter().cloned().collect();
        let mut bytes = 0;
        for name in names {
            bytes += self.node(storage, owner, &name).await?.map_or(0, |n| n.bytes());
        }
        Ok(*self.account_bytes.insert(bytes))
    }

    /// XEP-0060 §7.1 with §7.1.4 auto-create: stores the item, answers with its id. The
    /// node's and the account's bytes are checked before anything is written.
    pub async fn publish(&mut self, storage: &Storage, owner: &str, limits: &Limits, request: Request) -> Result<Published, StanzaError> {
        let Request::Publish { node: name, id, payload, options } = request else {
            unreachable!("only publish requests are published")
        };
        let (mut node, new) = match self.node(storage, owner, &name).await? {
            Some(node) if !options.met_by(&node) => return Err(StanzaError::PreconditionNotMet),
            Some(node) => (node, false),
            None if self.index(storage, owner).await?.len() >= limits.pep_nodes_max => return Err(StanzaError::ResourceConstraint),
            None => (options.new_node(), true),
        };
        let id = id.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        let xml = to_xml(&payload);
        let bytes_before = node.bytes();
        let evicted = node.put(Entry::new(&id, &xml));
        if node.bytes() > limits.pep_node_bytes_max {
            return Err(StanzaError::PayloadTooBig);
        }
        let account = self.account_bytes(storage, owner).await?.saturating_sub(bytes_before) + node.bytes();
        if account > limits.pep_account_bytes_max {
            return Err(StanzaError::ResourceConstraint);
        }
        let event = event(&name, Some(item(&id, payload)), None);
        let mut docs: Vec<_> = evicted.iter().filter(|e| **e != id).map(|e| (item_key(&name, e), None)).collect();
        docs.push((item_key(&name, &id), Some(xml)));
        docs.push((node_key(&name), Some(to_json(&node))));
        self.write(storage, owner, &name, new, docs).await?;
        self.account_bytes = Some(account);
        let publish = Publish { node: NodeName(name), items: vec![Item { id: Some(ItemId(id)), publisher: None, payload: None }] };
        let result = PubSub::Publish { publish, publish_options: None }.into();
        Ok(Published { result, event, access: node.access })
    }

    /// Writes `docs` in one transaction, with the node list when `name` is `new`.
    async fn write(&mut self, storage: &Storage, owner: &str, name: &str, new: bool, mut docs: Vec<(String, Option<String>)>) -> Result<(), StanzaError> {
        let index = self.index(storage, owner).await?;
        if new {
            let listed: String = index.iter().chain([&name.to_owned()]).map(|n| format!("{n}\n")).collect();
            docs.push((INDEX_KEY.into(), Some(listed)));
        }
        storage.docs_put(owner.into(), docs).await.map_err(unavailable)?;
        if new {
            index.insert(name.to_owned());
        }
        Ok(())
    }

    /// XEP-0060 §7.2: removes the item; the retraction event when `notify` asked for one.
    pub async fn retract(&mut self, storage: &Storage, owner: &str, request: Request) -> Result<Option<(Element, Access)>, StanzaError> {
        let Request::Retract { node: name, id, notify } = request else {
            unreachable!("only retract requests are retracted")
        };
        let mut node = self.node(storage, owner, &name).await?.ok_or(StanzaError::ItemNotFound)?;
        let bytes_before = node.bytes();
        let before = node.entries.len();
        node.entries.retain(|e| e.id != id);
        if node.entries.len() == before {
            return Err(StanzaError::ItemNotFound);
        }
        let docs = vec![(item_key(&name, &id), None), (node_key(&name), Some(to_json(&node)))];
        self.write(storage, owner, &name, false, docs).await?;
        self.account_bytes = self.account_bytes.map(|b| b.saturating_sub(bytes_before) + node.bytes());
        Ok(notify.then(|| (event(&name, None, Some(id)), node.access)))
    }

    /// XEP-0060 §6.5: the items `reader` asked for, newest `max` or by id. Access is checked
    /// on the node's configuration alone; then only the payloads asked for are read.
    pub async fn items(&mut self, storage: &Storage, owner: &str, reader: Reader, request: Request) -> Result<(Element, usize), StanzaError> {
        let Request::Items { node: name, max, ids } = request else {
            unreachable!("only items requests list items")
        };
        let node = self.node(storage, owner, &name).await?.ok_or(StanzaError::ItemNotFound)?;
        node.access.admits(reader)?;
        let mut chosen: Vec<&Entry> = node.entries.iter().filter(|e| ids.is_empty() || ids.contains(&e.id)).collect();
        if let Some(max) = max {
            chosen.drain(..chosen.len().saturating_sub(max));
        }
        let mut items = Items::new(&name);
        for entry in &chosen {
            let payload = self.payload(storage, owner, &name, &entry.id).await?;
            items.items.push(Item { id: Some(ItemId(entry.id.clone())), publisher: None, payload });
        }
        Ok((PubSub::Items(items).into(), chosen.len()))
    }

    /// The event for the last item of `node`, sent to a resource that came to want it (§4.3.4).
    pub async fn last_item_event(&self, storage: &Storage, owner: &str, name: &str, node: &Node) -> Option<Element> {
        let last = node.entries.last()?;
        let payload = self.payload(storage, owner, name, &last.id).await.ok()??;
        Some(event(name, Some(item(&last.id, payload)), None))
    }
}

fn to_json(node: &Node) -> String {
    serde_json::to_string(node).unwrap_or_default()
}

fn item(id: &str, payload: Element) -> event::Item {
    event::Item { id: Some(ItemId(id.to_owned())), publisher: None, payload: Some(payload) }
}

/// `<event/>` for one published or one retracted item (XEP-0060 §7.1.2.1, §7.2.2.1).
fn event(node: &str, published: Option<event::Item>, retracted: Option<String>) -> Element {
    let payload = event::Payload::Items {
        node: NodeName(node.to_owned()),
        published: published.into_iter().collect(),
        retracted: retracted.into_iter().map(ItemId).collect(),
    };
    Event { payload }.into()
}

/// The notification message carrying `event`; the caller addresses it (XEP-0163 §4.3).
pub fn notification(event: Element) -> Element {
    let id = format!("pep{:x}", rand::random::<u64>());
    build("message", ns::CLIENT, &[("type", "headline"), ("id", &id)], vec![event])
}

/// The node an event notification is about.
pub fn event_node(message: &Element) -> Option<String> {
    let event = message.get_child("event", ns::PUBSUB_EVENT)?;
    Event::try_from(event.clone()).ok().map(|e| e.payload.node_name().0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(xml: &str) -> Result<Request, StanzaError> {
        let el: Element = xml.parse().unwrap();
        let type_ = if el.get_child("items", ns::PUBSUB).is_some() { "get" } else { "set" };
        parse(type_, &el, &Limits::default())
    }

    const P: &str = "xmlns='http://jabber.org/protocol/pubsub'";

    #[test]
    fn publish_parses_with_and_without_id() {
        let r = request(&format!("<pubsub {P}><publish node='n'><item id='a'><x xmlns='y'/></item></publish></pubsub>")).unwrap();
        assert!(matches!(r, Request::Publish { ref node, id: Some(ref id), .. } if node == "n" && id == "a"));
        let r = request(&format!("<pubsub {P}><publish node='n'><item><x xmlns='y'/></item></publish></pubsub>")).unwrap();
        assert!(matches!(r, Request::Publish { id: None, .. }));
    }

    #[test]
    fn malformed_publishes_get_their_xep_0060_errors() {
        let cases = [
            (format!("<pubsub {P}><publish><item><x xmlns='y'/></item></publish></pubsub>"), StanzaError::NodeIdRequired),
            (format!("<pubsub {P}><publish node='n'/></pubsub>"), StanzaError::PayloadRequired),
            (format!("<pubsub {P}><publish node='n'><item id='a'/></publish></pubsub>"), StanzaError::PayloadRequired),
            (format!("<pubsub {P}><publish node='n'><item><x xmlns='y'/></item><item><x xmlns='y'/></item></publish></pubsub>"), StanzaError::InvalidPayload),
            (format!("<pubsub {P}><retract node='n'/></pubsub>"), StanzaError::ItemRequired),
            (format!("<pubsub {P}><create node='n'/></pubsub>"), StanzaError::Unsupported("create-nodes")),
            (format!("<pubsub {P}><bogus/></pubsub>"), StanzaError::BadRequest),
        ];
        for (xml, err) in cases {
            assert_eq!(request(&xml).unwrap_err(), err, "{xml}");
        }
    }

    #[test]
    fn a_payload_past_the_limit_is_too_big() {
        let big = "z".repeat(Limits::default().pep_item_bytes_max);
        let xml = format!("<pubsub {P}><publish node='n'><item><x xmlns='y'>{big}</x></item></publish></pubsub>");
        assert_eq!(request(&xml).unwrap_err(), StanzaError::PayloadTooBig);
    }

    fn with_options(fields: &str) -> Result<Request, StanzaError> {
        request(&format!(
            "<pubsub {P}><publish node='n'><item><x xmlns='y'/></item></publish><publish-options>\
             <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#publish-options</value></field>{fields}</x>\
             </publish-options></pubsub>"
        ))
    }

    #[test]
    fn publish_options_are_preconditions_we_can_meet_or_refuse() {
        let r = with_options("<field var='pubsub#access_model'><value>whitelist</value></field><field var='pubsub#max_items'><value>max</value></field>").unwrap();
        let Request::Publish { options, .. } = r else { panic!() };
        let node = options.new_node();
        assert_eq!((node.access, node.max_items), (Access::Whitelist, Limits::default().pep_node_items_max));
        assert!(options.met_by(&node));
        assert!(!options.met_by(&Options::default().new_node()));
        for bad in [
            "<field var='pubsub#access_model'><value>roster</value></field>",
            "<field var='pubsub#persist_items'><value>false</value></field>",
            "<field var='pubsub#max_items'><value>100000</value></field>",
            "<field var='pubsub#title'><value>t</value></field>",
        ] {
            assert_eq!(with_options(bad).unwrap_err(), StanzaError::PreconditionNotMet, "{bad}");
        }
    }

    #[test]
    fn a_node_keeps_its_newest_items_and_one_per_id() {
        let mut node = Options::default().new_node();
        node.max_items = 2;
        let mut evicted = Vec::new();
        for id in ["a", "b", "a", "c"] {
            evicted.extend(node.put(Entry::new(id, &format!("<x xmlns='y'>{id}</x>"))));
        }
        let ids: Vec<&str> = node.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!((ids, evicted), (vec!["a", "c"], vec!["b".to_owned()]));
        assert_eq!(node.bytes(), 2 * (1 + "<x xmlns='y'>a</x>".len()));
    }

    #[test]
    fn a_node_stored_with_its_items_inline_still_reads() {
        let json = r#"{"access":"Open","max_items":2,"send_last":true,"items":[{"id":"a","payload":"<x xmlns='y'/>"}]}"#;
        let node: Node = serde_json::from_str(json).unwrap();
        assert_eq!((node.access, node.items.len(), node.entries.len()), (Access::Open, 1, 0));
        assert!(!to_json(&node).contains("payload"));
    }

    #[test]
    fn a_node_stored_inline_is_split_into_one_document_per_item_on_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::StorageConfig { path: dir.path().join("data"), ..Default::default() };
        let storage = Storage::open(&cfg).unwrap();
        let (owner, legacy) = ("a@d", r#"{"access":"Open","max_items":2,"send_last":true,"items":[{"id":"a","payload":"<x xmlns='y'>1</x>"},{"id":"b","payload":"<x xmlns='y'>2</x>"}]}"#);
        futures_lite::future::block_on(async {
            storage.doc_put(owner.into(), INDEX_KEY.into(), Some("n\n".into())).await.unwrap();
            storage.doc_put(owner.into(), node_key("n"), Some(legacy.into())).await.unwrap();
            let node = Service::default().node(&storage, owner, "n").await.unwrap().unwrap();
            let ids: Vec<&str> = node.entries.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["a", "b"]);
            // Stored in the new layout: a fresh service reads it without the inline items.
            let stored = storage.doc_get(owner.into(), node_key("n")).await.unwrap().unwrap();
            assert!(!stored.contains("payload"), "{stored}");
            let service = Service::default();
            let payload = service.payload(&storage, owner, "n", "b").await.unwrap().unwrap();
            assert_eq!(payload.text(), "2");
        });
    }

    #[test]
    fn access_models_admit_as_xep_0060_says() {
        assert_eq!(Access::Presence.admits(Reader::Subscriber), Ok(()));
        assert_eq!(Access::Presence.admits(Reader::Other), Err(StanzaError::PresenceSubscriptionRequired));
        assert_eq!(Access::Whitelist.admits(Reader::Subscriber), Err(StanzaError::ClosedNode));
        assert_eq!(Access::Whitelist.admits(Reader::Owner), Ok(()));
        assert_eq!(Access::Open.admits(Reader::Other), Ok(()));
    }

    #[test]
    fn events_name_their_node() {
        let msg = notification(event("urn:x", Some(item("i", Element::bare("x", "y"))), None));
        assert_eq!(event_node(&msg).as_deref(), Some("urn:x"));
    }
}
