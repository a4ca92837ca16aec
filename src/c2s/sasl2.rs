//! XEP-0388 Extensible SASL Profile (SASL2): one `<authenticate/>` carries the mechanism's
//! first message and everything the client wants done once it is in: XEP-0386 Bind 2,
//! XEP-0198 resumption, a XEP-0484 FAST token. The `<success/>` answers all of it, and
//! the stream goes on without a restart, so a client with a token resumes in one round
//! trip. The mechanisms are those of `sasl` (under this profile's framing) plus FAST's.

use std::rc::Rc;

use minidom::Element;

use super::bind2;
use super::conn::{Conn, ConnEnd};
use super::fast;
use super::negotiate::{session_features, Authenticated, LoggedIn};
use super::sasl::{self, Mechanism, Outcome, Profile};
use super::session::BoundSession;
use crate::modules::stream_mgmt as sm;
use crate::router::CoreState;
use crate::stanza::{build, text_el, to_xml};
use crate::xml::ns;

/// Longest user-agent id kept, in bytes; a longer one is treated as absent.
const AGENT_ID_BYTES_MAX: usize = 256;

/// `<authentication/>`: the mechanisms and the inline features (XEP-0388 §2.1).
/// XEP-0198 rides along only where the transport offers it (`Transport::offers_sm`).
pub fn feature(core: &CoreState, mechanisms: &[Mechanism], with_sm: bool) -> Element {
    let mut children: Vec<Element> = mechanisms.iter().map(|m| text_el("mechanism", ns::SASL2, m.name())).collect();
    let mut inline = vec![bind2::feature(with_sm)];
    inline.extend(with_sm.then(sm::stream_feature));
    if fast_on(core) {
        inline.push(fast::feature());
    }
    children.push(build("inline", ns::SASL2, &[], inline));
    build("authentication", ns::SASL2, &[], children)
}

fn fast_on(core: &CoreState) -> bool {
    core.cfg.fast.token_lifetime_secs > 0
}

/// A client's `<authenticate/>`.
#[derive(Debug)]
pub struct Authenticate {
    mechanism: Option<String>,
    /// Base64; empty when there is no `<initial-response/>`.
    initial: String,
    /// `<user-agent id='…'/>`: names the client for Bind 2 and FAST.
    agent: Option<String>,
    bind: Option<bind2::Request>,
    /// XEP-0198 `<resume previd='…' h='…'/>`.
    resume: Option<(String, u32)>,
    fast: fast::Request,
}

impl Authenticate {
    pub fn parse(el: &Element) -> Authenticate {
        let agent = el.get_child("user-agent", ns::SASL2).and_then(|ua| ua.attr("id"));
        let resume = el.children().find_map(|c| match sm::ClientSm::parse(c) {
            Some(sm::ClientSm::Resume { previd, h }) => Some((previd, h)),
            _ => None,
        });
        Authenticate {
            mechanism: el.attr("mechanism").map(str::to_owned),
            initial: el.get_child("initial-response", ns::SASL2).map(|r| r.text()).unwrap_or_default(),
            agent: agent.filter(|a| !a.is_empty() && a.len() <= AGENT_ID_BYTES_MAX).map(str::to_owned),
            bind: el.get_child("bind", ns::BIND2).map(bind2::Request::parse),
            resume,
            fast: fast::Request::parse(el),
        }
    }
}

/// Runs the exchange: FAST's token proof, or one of the password mechanisms. With the
/// outcome comes whether the token used is due for rotation.
pub async fn authenticate(
    core: &Rc<CoreState>,
    conn: &mut Conn,
    offered: &[Mechanism],
    req: &Authenticate,
) -> Result<(Outcome, bool), ConnEnd> {
    if req.mechanism.as_deref() == Some(fast::MECHANISM) && fast_on(core) {
        return fast::authenticate(core, conn, req.agent.as_deref(), &req.fast, &req.initial).await;
    }
    let outcome = sasl::authenticate(core, conn, Profile::Sasl2, offered, req.mechanism.as_deref(), &req.initial).await?;
    Ok((outcome, false))
}

/// After a successful exchange: resumption or binding as asked, a token when asked or due,
/// then `<success/>` and the stream's features.
pub async fn complete(
    mut auth: Authenticated,
    req: Authenticate,
    additional: Option<Vec<u8>>,
    rotate: bool,
) -> Result<LoggedIn, (Conn, ConnEnd)> {
    auth.core.counters.sasl2_logins.inc();
    let mut extra = Vec::new();
    if let Some(agent) = req.agent.as_deref().filter(|_| (req.fast.token_wanted || rotate) && fast_on(&auth.core)) {
        match fast::issue(&auth.core, &auth.user, agent).await {
            Ok(token) => extra.push(token),
            Err(e) => log::error!("{}: no FAST token issued: {e}", auth.user),
        }
    }
    let with_sm = auth.conn.transport.offers_sm();
    if let Some((previd, h)) = req.resume.filter(|_| with_sm) {
        match auth.resume(previd.into(), h).await {
            Err(e) => return Err((auth.conn, e)),
            Ok(Some(resumed)) => {
                let jid = auth.user.with_resource_str(&resumed.handover.resource).expect("a bound resource is valid");
                extra.push(sm::resumed(&resumed.resume_id, resumed.handover.handled));
                let mut greeting = to_xml(&success(&jid.to_string(), additional.as_deref(), extra));
                greeting.push_str(&features(&auth.core, false));
                let Authenticated { core, conn, .. } = auth;
                return Ok(LoggedIn::Bound(BoundSession::resumed(core, conn, jid, resumed, Some(greeting))));
            }
            // XEP-0198 §5 with XEP-0388: resumption failed, binding (if asked) goes ahead.
            Ok(None) => extra.push(sm::failed("item-not-found")),
        }
    }
    let Some(bind) = req.bind else {
        let answer = success(&auth.user.to_string(), additional.as_deref(), extra);
        if let Err(e) = auth.conn.send_el(&answer).await {
            return Err((auth.conn, e.into()));
        }
        return Ok(LoggedIn::Unbound(auth)); // its features offer RFC 6120 binding next
    };
    let jid = bind2::resource(&auth.user, bind.tag.as_deref(), req.agent.as_deref());
    let enabled = bind.sm_enable.filter(|_| with_sm).map(|resume| sm::enable(&auth.core.cfg.stream_management, resume));
    let answers = enabled.iter().map(|(_, reply)| reply.clone()).collect();
    extra.push(bind2::bound(answers));
    let mut greeting = to_xml(&success(&jid.to_string(), additional.as_deref(), extra));
    greeting.push_str(&features(&auth.core, enabled.is_none() && with_sm));
    if let Err(e) = auth.conn.send(greeting.as_bytes()).await {
        return Err((auth.conn, e.into()));
    }
    let Authenticated { core, conn, .. } = auth;
    let inline = super::session::Inline { sm: enabled.map(|(state, _)| state), carbons: bind.carbons, inactive: bind.inactive };
    Ok(LoggedIn::Bound(BoundSession::new(core, conn, jid).with_inline(inline)))
}

/// XEP-0388 §2.6.1: `<success/>` with the authorization identifier (a full JID once bound).
fn success(aid: &str, additional: Option<&[u8]>, extra: Vec<Element>) -> Element {
    let mut children = Vec::new();
    if let Some(data) = additional {
        children.push(text_el("additional-data", ns::SASL2, &sasl::encode(data)));
    }
    children.push(text_el("authorization-identifier", ns::SASL2, aid));
    children.extend(extra);
    build("success", ns::SASL2, &[], children)
}

/// The features of a stream bound through SASL2: no binding left to offer, and XEP-0198
/// only when it is not on yet (a client seeing `<sm/>` would enable or resume again).
fn features(core: &CoreState, with_sm: bool) -> String {
    super::features::to_wire(&session_features(core, with_sm))
}

/// Entry point for `fuzz/` only (cargo-fuzz compiles with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::*;

    /// A client's `<authenticate/>` read whole, its initial response run through the
    /// password mechanisms and FAST's, and `final_b64` as SCRAM's client-final message.
    pub fn authenticate(el: &Element, final_b64: &str) {
        let req = Authenticate::parse(el);
        sasl::fuzzing::client_messages(&req.initial, final_b64);
        fast::fuzzing::token_proof(&req.fast, &req.initial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_is_read_whole() {
        let el: Element = "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='SCRAM-SHA-1'>\
            <initial-response>biwsbj1h</initial-response><user-agent id='d4565fa7'><software>x</software></user-agent>\
            <bind xmlns='urn:xmpp:bind:0'><tag>x</tag></bind><resume xmlns='urn:xmpp:sm:3' previd='p' h='3'/>\
            <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/></authenticate>"
            .parse()
            .unwrap();
        let req = Authenticate::parse(&el);
        assert_eq!(req.mechanism.as_deref(), Some("SCRAM-SHA-1"));
        assert_eq!(req.initial, "biwsbj1h");
        assert_eq!(req.agent.as_deref(), Some("d4565fa7"));
        assert_eq!(req.bind.and_then(|b| b.tag).as_deref(), Some("x"));
        assert_eq!(req.resume, Some(("p".into(), 3)));
        assert!(req.fast.token_wanted);
    }

    #[test]
    fn success_names_the_identity_and_carries_the_rest() {
        let s = success("a@localhost/r", Some(b"v=abc"), vec![bind2::bound(vec![])]);
        assert_eq!(s.get_child("authorization-identifier", ns::SASL2).unwrap().text(), "a@localhost/r");
        assert_eq!(s.get_child("additional-data", ns::SASL2).unwrap().text(), sasl::encode(b"v=abc"));
        assert!(s.get_child("bound", ns::BIND2).is_some());
    }
}
