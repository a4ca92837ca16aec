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
use crate::router::CoreState;
use crate::stanza::StanzaError;
use crate::xml::ns;

pub mod carbons;
pub mod csi;
pub mod delivery;
pub mod disco;
pub mod offline;
pub mod ping;
pub mod register;
pub mod roster;
pub mod session_iq;
pub mod stream_mgmt;
pub mod subscription;
pub mod version;

pub enum IqAnswer {
    /// `type='result'`, with this payload if any.
    Result(Option<Element>),
    Error(StanzaError),
}

pub type IqFuture<'a> = Pin<Box<dyn Future<Output = IqAnswer> + 'a>>;

/// What a handler sees: the core, the requesting full JID, the IQ and its one payload.
pub struct IqRequest<'a> {
    pub core: &'a Rc<CoreState>,
    pub user: &'a FullJid,
    pub iq: &'a Element,
    pub payload: &'a Element,
}

/// An IQ namespace the server answers itself.
pub struct ServerIq {
    /// The document that defines it, for people reading the table.
    pub spec: &'static str,
    pub namespace: &'static str,
    /// What disco#info lists for it.
    pub features: &'static [&'static str],
    pub enabled: fn(&Config) -> bool,
    pub handle: for<'a> fn(IqRequest<'a>) -> IqFuture<'a>,
}

fn always(_: &Config) -> bool {
    true
}

/// The server's IQ handlers. Roster IQs are not here: the user's UserChannel owns the roster
/// and answers them on its core.
pub static SERVER_IQS: &[ServerIq] = &[
    ServerIq { spec: "XEP-0030", namespace: ns::DISCO_INFO, features: &[ns::DISCO_INFO], enabled: always, handle: disco::info },
    ServerIq { spec: "XEP-0030", namespace: ns::DISCO_ITEMS, features: &[ns::DISCO_ITEMS], enabled: always, handle: disco::items },
    ServerIq { spec: "XEP-0092", namespace: ns::VERSION, features: &[ns::VERSION], enabled: always, handle: version::handle },
    ServerIq { spec: "XEP-0199", namespace: ns::PING, features: &[ns::PING], enabled: always, handle: ping::handle },
    ServerIq { spec: "RFC 3921 §3", namespace: ns::SESSION, features: &[], enabled: always, handle: session_iq::handle },
    ServerIq { spec: "XEP-0280", namespace: ns::CARBONS, features: &[ns::CARBONS], enabled: always, handle: carbons::handle },
    ServerIq {
        spec: "XEP-0077",
        namespace: ns::REGISTER,
        features: &[ns::REGISTER],
        enabled: |cfg| cfg.registration.enabled,
        handle: register::authenticated,
    },
];

/// Features served outside IQ handlers, each implemented where its spec label points.
pub static OTHER_FEATURES: &[(&str, &str)] = &[
    ("XEP-0160, modules/offline.rs", ns::OFFLINE),
    ("RFC 6121 §2, router/user_channel.rs", ns::ROSTER),
];

/// Answers an IQ addressed to the server (or to the user's own account).
pub async fn handle_server_iq(core: &Rc<CoreState>, user: &FullJid, iq: &Element, payload: &Element) -> IqAnswer {
    let ns = payload.ns();
    match SERVER_IQS.iter().find(|m| m.namespace == ns && (m.enabled)(&core.cfg)) {
        Some(m) => (m.handle)(IqRequest { core, user, iq, payload }).await,
        // RFC 6120 §8.4: a payload nobody here understands.
        None => IqAnswer::Error(StanzaError::ServiceUnavailable),
    }
}

/// Every feature the server advertises, sorted.
pub fn features(cfg: &Config) -> Vec<&'static str> {
    let mut all: Vec<&str> = SERVER_IQS
        .iter()
        .filter(|m| (m.enabled)(cfg))
        .flat_map(|m| m.features.iter().copied())
        .chain(OTHER_FEATURES.iter().map(|(_, f)| *f))
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}
