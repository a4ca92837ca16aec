//! The XEP-0045 service itself (§6): its disco#info, the public room list (disco#items),
//! and the node's [`Directory`] of rooms, which bounds how many exist and how fast one
//! account may create them.
//!
//! The directory is shared by the node's cores behind one mutex: it is touched when a room
//! is created, configured, destroyed or listed, never per message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use minidom::Element;

use crate::config;
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

/// A room as the public list shows it; persistent rooms keep theirs in storage (owner: the
/// service's domain, key [`INDEX_PREFIX`] + the room's JID), read back at start.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    pub name: String,
    pub public: bool,
}

pub struct Directory {
    rooms_max: usize,
    created_per_hour: usize,
    /// Accounts whose creations are counted at most; past it, windows that ended are
    /// swept, then a new creator is refused until one ends.
    creators_max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: BTreeMap<String, Listing>,
    /// Creator's bare JID -> (start of its hour, rooms created in it).
    creations: HashMap<String, (Instant, usize)>,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Key prefix of the persistent rooms' index entries.
pub const INDEX_PREFIX: &str = "room:";

impl Directory {
    pub fn new(cfg: &config::Muc, creators_max: usize) -> Directory {
        Directory {
            rooms_max: cfg.rooms_max,
            created_per_hour: cfg.rooms_created_per_user_per_hour,
            creators_max,
            inner: Mutex::default(),
        }
    }

    /// The persistent rooms' index as stored (`(INDEX_PREFIX + jid, listing)`), at start.
    pub fn load(&self, stored: Vec<(String, String)>) {
        let mut inner = self.inner();
        for (key, json) in stored {
            match (key.strip_prefix(INDEX_PREFIX), serde_json::from_str::<Listing>(&json)) {
                (Some(jid), Ok(listing)) => {
                    inner.rooms.insert(jid.to_owned(), listing);
                }
                _ => log::warn!("muc: index entry {key:?} unreadable; skipped"),
            }
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a list that is still a list.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `creator` creates `room`: counted against `rooms_max` and the creator's hourly
    /// allowance, or refused with `<resource-constraint/>`.
    pub fn create(&self, room: &str, creator: &str) -> Result<(), StanzaError> {
        let mut inner = self.inner();
        if inner.rooms.len() >= self.rooms_max {
            return Err(StanzaError::ResourceConstraint);
        }
        let now = Instant::now();
        if inner.creations.len() >= self.creators_max && !inner.creations.contains_key(creator) {
            inner.creations.retain(|_, (since, _)| now.duration_since(*since) < HOUR);
            if inner.creations.len() >= self.creators_max {
                return Err(StanzaError::ResourceConstraint);
            }
        }
        let window = inner.creations.entry(creator.to_owned()).or_insert((now, 0));
        if now.duration_since(window.0) >= HOUR {
            *window = (now, 0);
        }
        if window.1 >= self.created_per_hour {
            return Err(StanzaError::ResourceConstraint);
        }
        window.1 += 1;
        inner.rooms.insert(room.to_owned(), Listing::default());
        Ok(())
    }

    /// The operator creates `room` (`martlet room create`): counted against `rooms_max`
    /// only, as no account's hourly allowance is spent.
    pub fn create_by_operator(&self, room: &str) -> Result<(), StanzaError> {
        let mut inner = self.inner();
        if inner.rooms.len() >= self.rooms_max {
            return Err(StanzaError::ResourceConstraint);
        }
        inner.rooms.insert(room.to_owned(), Listing::default());
        Ok(())
    }

    /// Every room this node knows, by JID, at most `max`: the persistent rooms read at
    /// start and the live rooms its cores own.
    pub fn rooms(&self, max: usize) -> Vec<(String, Listing)> {
        self.inner().rooms.iter().take(max).map(|(jid, l)| (jid.clone(), l.clone())).collect()
    }

    /// A room that exists (loaded from storage, or created) shows as `listing`.
    pub fn update(&self, room: &str, listing: Listing) {
        self.inner().rooms.insert(room.to_owned(), listing);
    }

    pub fn remove(&self, room: &str) {
        self.inner().rooms.remove(room);
    }

    pub fn room_count(&self) -> usize {
        self.inner().rooms.len()
    }

    /// The public rooms, by JID, at most `max`.
    pub fn public_rooms(&self, max: usize) -> Vec<(String, String)> {
        let inner = self.inner();
        inner.rooms.iter().filter(|(_, l)| l.public).take(max).map(|(jid, l)| (jid.clone(), l.name.clone())).collect()
    }
}

/// Rooms listed in one disco#items answer at most (XEP-0045 §6.3 allows paging; a list
/// this long is cut, not paged).
const LISTED_ROOMS_MAX: usize = 500;

/// An IQ to the service's own JID: disco#info (§6.2), disco#items (§6.3), ping.
pub fn answer_iq(directory: &Directory, payload: &Element, type_: &str) -> Result<Option<Element>, StanzaError> {
    if type_ != "get" {
        return Err(StanzaError::ServiceUnavailable);
    }
    if payload.attr("node").is_some() {
        return Err(StanzaError::ItemNotFound);
    }
    match payload.ns().as_str() {
        ns::DISCO_INFO if payload.name() == "query" => {
            let identity = build("identity", ns::DISCO_INFO, &[("category", "conference"), ("type", "text"), ("name", "Chatrooms")], vec![]);
            let features = [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::MUC, ns::MUC_USER, ns::CONFERENCE, ns::OCCUPANT_ID, ns::PING]
                .into_iter()
                .map(|var| build("feature", ns::DISCO_INFO, &[("var", var)], vec![]));
            Ok(Some(build("query", ns::DISCO_INFO, &[], std::iter::once(identity).chain(features).collect())))
        }
        ns::DISCO_ITEMS if payload.name() == "query" => {
            let items = directory
                .public_rooms(LISTED_ROOMS_MAX)
                .into_iter()
                .map(|(jid, name)| {
                    let mut attrs = vec![("jid", jid.as_str())];
                    if !name.is_empty() {
                        attrs.push(("name", name.as_str()));
                    }
                    build("item", ns::DISCO_ITEMS, &attrs, vec![])
                })
                .collect();
            Ok(Some(build("query", ns::DISCO_ITEMS, &[], items)))
        }
        ns::PING if payload.name() == "ping" => Ok(None),
        _ => Err(StanzaError::ServiceUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_is_bounded_per_node_and_per_creator() {
        let cfg = config::Muc { rooms_max: 3, rooms_created_per_user_per_hour: 2, ..config::Muc::default() };
        let d = Directory::new(&cfg, 16);
        assert!(d.create("a@c", "u@d").is_ok() && d.create("b@c", "u@d").is_ok());
        assert_eq!(d.create("c@c", "u@d"), Err(StanzaError::ResourceConstraint), "the hourly allowance is spent");
        assert!(d.create("c@c", "v@d").is_ok());
        assert_eq!(d.create("d@c", "w@d"), Err(StanzaError::ResourceConstraint), "rooms_max");
        d.remove("a@c");
        assert!(d.create("d@c", "w@d").is_ok());
    }

    #[test]
    fn only_public_rooms_are_listed() {
        let d = Directory::new(&config::Muc::default(), 16);
        d.update("a@c", Listing { name: "A".into(), public: true });
        d.update("b@c", Listing { name: "B".into(), public: false });
        assert_eq!(d.public_rooms(10), [("a@c".to_string(), "A".to_string())]);
    }
}
