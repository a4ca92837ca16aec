//! XEP-0115 Entity Capabilities of clients, for XEP-0163 filtered notifications (§4.3.2):
//! a client's presence carries `<c/>`, a hash of its disco#info, and the features there
//! ending in `+notify` name the PEP nodes it wants events from. The client's own session
//! asks it for the disco#info behind a hash it has not seen and tells the UserChannel the
//! nodes ([`crate::router::UserMsg::PepInterest`]). Each core remembers what every verified
//! hash stands for, so the round trip is made once per client version and core, not once
//! per login.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps, query_caps, Caps};
use xmpp_parsers::disco::DiscoInfoResult;
use xmpp_parsers::hashes::Algo;

use crate::stanza::build;
use crate::xml::ns;

/// The PEP nodes a client wants notifications from, sorted.
pub type Interests = Arc<[Arc<str>]>;

/// Verified hashes, per core, at most `entries_max` (`[limits] caps_cache_entries_max`).
/// When full it starts again empty: a client making up hashes costs itself round trips,
/// and the table stays bounded.
pub struct Cache {
    known: RefCell<HashMap<String, Interests>>,
    entries_max: usize,
}

/// A disco#info query sent to a client, waiting for its answer.
pub struct Pending {
    pub id: String,
    key: String,
    algo: Algo,
    ver: Vec<u8>,
}

pub enum Lookup {
    Known(Interests),
    /// Send this query to the client; its answer goes to [`Cache::answer`].
    Ask(Pending, Element),
}

impl Cache {
    pub fn new(entries_max: usize) -> Cache {
        Cache { known: RefCell::default(), entries_max }
    }

    /// What the `<c/>` of `presence` (from `client`, a full JID) stands for, or the query to
    /// learn it; `None` when there is no usable `<c/>` (legacy caps have no hash).
    pub fn lookup(&self, presence: &Element, domain: &str, client: &str) -> Option<Lookup> {
        let caps = Caps::try_from(presence.get_child("c", ns::CAPS)?.clone()).ok()?;
        let key = format!("{:?}:{}", caps.hash, base64::engine::general_purpose::STANDARD.encode(&caps.ver));
        if let Some(known) = self.known.borrow().get(&key) {
            return Some(Lookup::Known(known.clone()));
        }
        let id = format!("caps{:x}", rand::random::<u64>());
        let (algo, ver) = (caps.hash.clone(), caps.ver.clone());
        let query = Element::from(query_caps(caps));
        let iq = build("iq", ns::CLIENT, &[("type", "get"), ("id", &id), ("from", domain), ("to", client)], vec![query]);
        Some(Lookup::Ask(Pending { id, key, algo, ver }, iq))
    }

    /// The interests in the client's answer to `pending`, remembered when the features hash
    /// to the version the client announced (an unverified answer is used for that session
    /// alone, never for others presenting the same hash). `None` for an error answer.
    pub fn answer(&self, pending: &Pending, iq: &Element) -> Option<Interests> {
        let info = iq.get_child("query", ns::DISCO_INFO).and_then(|q| DiscoInfoResult::try_from(q.clone()).ok())?;
        let interests: Interests = info.features.iter().filter_map(|f| f.strip_suffix("+notify")).map(Arc::from).collect();
        let verified = hash_caps(&compute_disco(&info), pending.algo.clone()).is_ok_and(|h| h.hash == pending.ver);
        if verified {
            let mut known = self.known.borrow_mut();
            if known.len() >= self.entries_max {
                known.clear();
            }
            known.insert(pending.key.clone(), interests.clone());
        }
        Some(interests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::disco::Identity;

    fn info() -> DiscoInfoResult {
        DiscoInfoResult {
            node: None,
            identities: vec![Identity { category: "client".into(), type_: "pc".into(), lang: None, name: None }],
            features: ["urn:xmpp:avatar:metadata+notify", "urn:xmpp:ping", "urn:x+notify"].iter().map(|f| f.to_string()).collect(),
            extensions: vec![],
        }
    }

    fn presence_with(ver_of: &DiscoInfoResult) -> Element {
        let hash = hash_caps(&compute_disco(ver_of), Algo::Sha_1).unwrap();
        build("presence", ns::CLIENT, &[], vec![Caps::new("https://client.example", hash).into()])
    }

    fn answer(info: DiscoInfoResult) -> Element {
        build("iq", ns::CLIENT, &[("type", "result")], vec![info.into()])
    }

    #[test]
    fn a_verified_answer_is_remembered_and_names_the_notify_nodes() {
        let cache = Cache::new(16);
        let presence = presence_with(&info());
        let Some(Lookup::Ask(pending, query)) = cache.lookup(&presence, "localhost", "a@localhost/r") else { panic!("asks first") };
        let node = query.get_child("query", ns::DISCO_INFO).and_then(|q| q.attr("node")).unwrap();
        assert!(node.starts_with("https://client.example#"), "{node}");
        let interests = cache.answer(&pending, &answer(info())).unwrap();
        assert_eq!(&*interests, &[Arc::from("urn:x"), Arc::from("urn:xmpp:avatar:metadata")]);
        assert!(matches!(cache.lookup(&presence, "localhost", "b@localhost/r"), Some(Lookup::Known(i)) if i == interests));
    }

    #[test]
    fn an_answer_that_does_not_hash_to_the_version_is_not_remembered() {
        let cache = Cache::new(16);
        let presence = presence_with(&info());
        let Some(Lookup::Ask(pending, _)) = cache.lookup(&presence, "localhost", "a@localhost/r") else { panic!() };
        let mut lie = info();
        lie.features.insert("urn:y+notify".into());
        assert!(cache.answer(&pending, &answer(lie)).unwrap().contains(&Arc::from("urn:y")));
        assert!(matches!(cache.lookup(&presence, "localhost", "b@localhost/r"), Some(Lookup::Ask(..))));
    }

    #[test]
    fn presence_without_caps_asks_nothing() {
        let cache = Cache::new(16);
        assert!(cache.lookup(&build("presence", ns::CLIENT, &[], vec![]), "localhost", "a@localhost/r").is_none());
    }
}
