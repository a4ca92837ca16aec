//! Protocol features, one per file, each labelled with its RFC or XEP (Prosody's
//! `mod_*.lua` shape). Server-handled IQs are registered as data in [`SERVER_IQS`]: the
//! session looks a request's payload namespace up there, and service discovery lists exactly
//! the features of the entries that are enabled — nothing is advertised that is not served.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use jid::FullJid;
use minidom::Element;

use crate::config::Config;
use crate::router::credit::Credit;
use crate::router::CoreState;
use crate::stanza::StanzaError;
use crate::xml::ns;

pub mod avatar;
pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod csi;
pub mod delay;
pub mod delivery;
pub mod disco;
pub mod entity_caps;
pub mod hints;
pub mod last;
pub mod mam;
pub mod offline;
pub mod pep;
pub mod private_xml;
pub mod ping;
pub mod push;
pub mod register;
pub mod roster;
pub mod session_iq;
pub mod stream_mgmt;
pub mod external_services;
pub mod subscription;
pub mod upload;
pub mod vcard;
pub mod version;

pub enum IqAnswer {
    /// `type='result'`, with this payload if any.
    Result(Option<Element>),
    /// These stanzas first (XEP-0313 results), then the `type='result'`.
    ResultAfter(Vec<Element>, Option<Element>),
    Error(StanzaError),
}

pub type IqFuture<'a> = Pin<Box<dyn Future<Output = IqAnswer> + 'a>>;

/// What a handler sees: the core, the requesting full JID, the IQ and its one payload.
pub struct IqRequest<'a> {
    pub core: &'a Rc<CoreState>,
    /// The asking session's credit, for what the request asks of the user's actor.
    pub credit: &'a Credit,
    pub user: &'a FullJid,
    pub iq: &'a Element,
    pub payload: &'a Element,
}

/// An IQ namespace the server answers itself.
pub struct ServerIq {
    /// The document that defines it, for people reading the table.
    pub spec: &'static str,
    pub namespace: &'static str,
    /// What disco#info of the server lists for it.
    pub features: &'static [&'static str],
    /// What disco#info of a user's own account (bare JID) lists for it.
    pub account_features: &'static [&'static str],
    pub enabled: fn(&Config) -> bool,
    pub handle: for<'a> fn(IqRequest<'a>) -> IqFuture<'a>,
}

fn always(_: &Config) -> bool {
    true
}

/// The server's IQ handlers. Roster IQs are not here: the user's UserChannel owns the roster
/// and answers them on its core.
pub static SERVER_IQS: &[ServerIq] = &[
    ServerIq { spec: "XEP-0030", namespace: ns::DISCO_INFO, features: &[ns::DISCO_INFO], account_features: &[], enabled: always, handle: disco::info },
    ServerIq { spec: "XEP-0030", namespace: ns::DISCO_ITEMS, features: &[ns::DISCO_ITEMS], account_features: &[], enabled: always, handle: disco::items },
    ServerIq { spec: "XEP-0092", namespace: ns::VERSION, features: &[ns::VERSION], account_features: &[], enabled: always, handle: version::handle },
    ServerIq { spec: "XEP-0012", namespace: ns::LAST, features: &[ns::LAST], account_features: &[], enabled: always, handle: last::server_uptime },
    ServerIq { spec: "XEP-0199", namespace: ns::PING, features: &[ns::PING], account_features: &[], enabled: always, handle: ping::handle },
    ServerIq { spec: "RFC 3921 §3", namespace: ns::SESSION, features: &[], account_features: &[], enabled: always, handle: session_iq::handle },
    ServerIq {
        spec: "XEP-0313, XEP-0359",
        namespace: ns::MAM,
        features: &[ns::MAM, ns::SID],
        account_features: &[ns::MAM, ns::SID],
        enabled: |cfg| cfg.archive.enabled,
        handle: mam::handle,
    },
    ServerIq { spec: "XEP-0049", namespace: ns::PRIVATE, features: &[ns::PRIVATE], account_features: &[], enabled: always, handle: private_xml::handle },
    ServerIq { spec: "XEP-0054", namespace: ns::VCARD, features: &[ns::VCARD], account_features: &[], enabled: always, handle: vcard::handle },
    ServerIq {
        spec: "XEP-0215",
        namespace: external_services::NS,
        features: &[external_services::NS],
        account_features: &[],
        enabled: |cfg| !cfg.external_services.is_empty(),
        handle: external_services::handle,
    },
    ServerIq { spec: "XEP-0280", namespace: ns::CARBONS, features: &[ns::CARBONS], account_features: &[], enabled: always, handle: carbons::handle },
    ServerIq {
        spec: "XEP-0077",
        namespace: ns::REGISTER,
        features: &[ns::REGISTER], account_features: &[],
        enabled: |cfg| cfg.registration.enabled,
        handle: register::authenticated,
    },
];

/// Features served outside IQ handlers, each implemented where its spec label points.
pub static OTHER_FEATURES: &[(&str, &str)] = &[
    ("XEP-0160, modules/offline.rs", ns::OFFLINE),
    ("RFC 6121 §2, router/user_channel.rs", ns::ROSTER),
    ("XEP-0191, modules/blocking.rs + router/user_channel.rs", ns::BLOCKING),
    ("XEP-0186, router/user_channel.rs", ns::INVISIBLE),
];

/// An IQ namespace a user's own UserChannel answers (it owns that state), not the session.
pub struct AccountIq {
    pub spec: &'static str,
    pub namespace: &'static str,
    /// What disco#info of an account (its bare JID) lists for it.
    pub account_features: &'static [&'static str],
    /// Whether others than the owner see those features (they can use them).
    pub public: bool,
    /// The disco identity (category, type) the account has by serving it.
    pub identity: Option<(&'static str, &'static str)>,
}

pub static ACCOUNT_IQS: &[AccountIq] = &[
    AccountIq { spec: "RFC 6121 §2", namespace: ns::ROSTER, account_features: &[], public: false, identity: None },
    AccountIq { spec: "XEP-0191", namespace: ns::BLOCKING, account_features: &[], public: false, identity: None },
    AccountIq { spec: "XEP-0186", namespace: ns::INVISIBLE, account_features: &[], public: false, identity: None },
    // XEP-0084 avatars are PEP nodes (modules/avatar.rs checks their items); entity caps
    // of clients (modules/entity_caps.rs) pick who gets which notifications.
    AccountIq {
        spec: "XEP-0163, XEP-0084",
        namespace: ns::PUBSUB,
        account_features: pep::FEATURES,
        public: true,
        identity: Some(("pubsub", "pep")),
    },
    AccountIq { spec: "XEP-0012", namespace: ns::LAST, account_features: &[ns::LAST], public: true, identity: None },
    AccountIq { spec: "XEP-0357", namespace: ns::PUSH, account_features: &[ns::PUSH], public: false, identity: None },
];

/// Is `namespace` answered by the user's UserChannel?
pub fn is_account_iq(namespace: &str) -> bool {
    ACCOUNT_IQS.iter().any(|a| a.namespace == namespace)
}

/// Answers an IQ addressed to the server (or to the user's own account).
pub async fn handle_server_iq(core: &Rc<CoreState>, credit: &Credit, user: &FullJid, iq: &Element, payload: &Element) -> IqAnswer {
    let ns = payload.ns();
    match SERVER_IQS.iter().find(|m| m.namespace == ns && (m.enabled)(&core.cfg)) {
        Some(m) => (m.handle)(IqRequest { core, credit, user, iq, payload }).await,
        // RFC 6120 §8.4: a payload nobody here understands.
        None => IqAnswer::Error(StanzaError::ServiceUnavailable),
    }
}

/// What an account advertises (XEP-0030 on the bare JID), sorted: to its owner, also what
/// the server answers only for the owner (the archive); to others, what its UserChannel
/// answers anyone.
pub fn account_features(cfg: &Config, to_owner: bool) -> Vec<&'static str> {
    let mut more: Vec<&str> =
        ACCOUNT_IQS.iter().filter(|a| to_owner || a.public).flat_map(|a| a.account_features.iter().copied()).collect();
    more.push(ns::DISCO_INFO);
    if to_owner {
        listed(cfg, |m| m.account_features, &more)
    } else {
        listed(cfg, |_| &[], &more)
    }
}

/// Every feature the server advertises, sorted.
pub fn features(cfg: &Config) -> Vec<&'static str> {
    let others: Vec<&str> = OTHER_FEATURES.iter().map(|(_, f)| *f).collect();
    listed(cfg, |m| m.features, &others)
}

/// The features `pick` names for every enabled entry, plus `more`, sorted and once each.
fn listed(cfg: &Config, pick: fn(&ServerIq) -> &'static [&'static str], more: &[&'static str]) -> Vec<&'static str> {
    let mut all: Vec<&str> =
        SERVER_IQS.iter().filter(|m| (m.enabled)(cfg)).flat_map(|m| pick(m).iter().copied()).chain(more.iter().copied()).collect();
    all.sort_unstable();
    all.dedup();
    all
}
