//! The hop between nodes: how a core hands a [`CoreMsg`] to another node of the cluster,
//! and the frame it travels in. The routing code sees only [`NodeLink`]; the cluster mesh
//! (`shards::cluster`) implements it, and a single node has none.

use super::envelope::CoreMsg;

/// Why a frame was not taken; the caller keeps it and decides (retry, reroute, drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// No live connection to that node (unknown, down, or not yet connected).
    Unreachable,
    /// Its outbound queue is full: wait, then try again (backpressure).
    Full,
}

/// A core's way out of its node. Never blocks: a core must not wait on a socket.
pub trait NodeLink {
    /// Queues `frame` for core `core_hint` of `node` (that node maps the hint onto its own
    /// cores, and its cores forward to the owner: the sender cannot know the owner core).
    fn send(&self, node: u32, core_hint: u16, frame: Vec<u8>) -> Result<(), (LinkError, Vec<u8>)>;
}

/// The frame payload of `msg`: postcard, versioned by the mesh's frame header.
pub fn encode(msg: &CoreMsg) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("every CoreMsg serialises")
}

/// A frame from another node; `Err` for a payload this build cannot read.
pub fn decode(frame: &[u8]) -> Result<CoreMsg, postcard::Error> {
    postcard::from_bytes(frame)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jid::Jid;

    use super::*;
    use crate::router::envelope::{SessionAddr, SessionMsg, UserMsg};
    use crate::stanza::{build, Kind, Receipt, Stanza};
    use crate::xml::ns;

    fn stanza() -> Stanza {
        let el = build("message", ns::CLIENT, &[("type", "chat")], vec![]);
        Stanza::seal(Kind::Message, el, Jid::new("a@localhost/r").unwrap(), Jid::new("b@localhost").unwrap())
    }

    #[test]
    fn every_kind_of_message_survives_the_wire() {
        let session = SessionAddr { node: 7, core: 1, slot: 42, generation: 9 };
        let receipt = Receipt { node: 3, core: 1, id: u64::MAX };
        let msgs = [
            CoreMsg::ToUser { user: "b@localhost".into(), msg: UserMsg::Inbound(stanza()) },
            CoreMsg::ToUser {
                user: "a@localhost".into(),
                msg: UserMsg::Rebind { resource: "r".into(), session, presence: Some(stanza()), roster_interested: true, resume_id: Some("id".into()), carbons: true, pep_interest: Arc::from([Arc::from("urn:xmpp:avatar:metadata")]), invisible: true },
            },
            CoreMsg::ToUser { user: "a@localhost".into(), msg: UserMsg::PepEvent { node: "urn:x".into(), stanza: stanza() } },
            CoreMsg::ToUser { user: "a@localhost".into(), msg: UserMsg::PepLast { to: "b@localhost/r".into(), nodes: Arc::from([Arc::from("urn:x")]) } },
            CoreMsg::ToUser { user: "a@localhost".into(), msg: UserMsg::NodeDown(3) },
            CoreMsg::ToUser { user: "a@localhost".into(), msg: UserMsg::Dormant { session, dormant: true } },
            CoreMsg::ToSession { to: session, msg: SessionMsg::Deliver(Arc::from("<message/>")) },
            CoreMsg::ToUser { user: "b@localhost".into(), msg: UserMsg::Inbound(Stanza { receipt: Some(receipt), ..stanza() }) },
            CoreMsg::HeldDelivery { to: session, xml: Arc::from("<message/>"), receipt, from_room: false, earlier: Some(receipt) },
            CoreMsg::StoredBacklog { to: session, rows: vec![(Some(receipt), Arc::from("<message/>")), (None, Arc::from("<m/>"))] },
            CoreMsg::Confirm { core: 1, ids: vec![5, 6] },
        ];
        for msg in msgs {
            let again = decode(&encode(&msg)).unwrap();
            assert_eq!(format!("{again:?}"), format!("{msg:?}"));
        }
    }

    #[test]
    fn a_bad_jid_from_the_wire_is_refused() {
        let msg = CoreMsg::ToUser { user: "b@localhost".into(), msg: UserMsg::Inbound(stanza()) };
        let bytes = encode(&msg);
        let text = String::from_utf8_lossy(&bytes).replace("a@localhost/r", "@@@@@@@@@@@@@");
        assert!(decode(text.as_bytes()).is_err());
    }

    #[test]
    fn stanza_text_that_is_no_element_is_refused() {
        // Found by fuzz/fuzz_targets/mesh_payload.rs: it decoded, and its receiver's
        // `Stanza::element` panicked on it.
        let msg = CoreMsg::ToUser { user: "b@localhost".into(), msg: UserMsg::Inbound(stanza()) };
        let good = stanza().xml.to_string();
        let bytes = encode(&msg);
        let text = String::from_utf8_lossy(&bytes).replace(&good, &format!("{:<1$}", "not xml", good.len()));
        assert!(decode(text.as_bytes()).is_err());
    }
}
