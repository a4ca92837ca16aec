//! RFC 6121 §3 and Appendix A: the presence subscription state machine, as pure functions
//! over one roster item, so every transition is unit-tested without a server.

use crate::storage::{RosterItem, Subscription};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubType {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubType {
    pub fn parse(type_: &str) -> Option<SubType> {
        match type_ {
            "subscribe" => Some(SubType::Subscribe),
            "subscribed" => Some(SubType::Subscribed),
            "unsubscribe" => Some(SubType::Unsubscribe),
            "unsubscribed" => Some(SubType::Unsubscribed),
            _ => None,
        }
    }
}

/// A fresh item for `contact`, not yet in the user's visible roster.
pub fn new_item(contact: &str) -> RosterItem {
    RosterItem {
        jid: contact.to_owned(),
        name: None,
        groups: Vec::new(),
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        listed: false,
    }
}

/// What the user's server does with a subscription stanza its user sends (Appendix A.2).
#[derive(Debug, PartialEq, Eq)]
pub struct Outbound {
    /// The roster item changed: store it and push it to the user's interested resources.
    pub changed: bool,
    /// Route the stanza to the contact.
    pub forward: bool,
}

pub fn outbound(item: &mut RosterItem, t: SubType) -> Outbound {
    use Subscription::*;
    let before = item.clone();
    let forward = match t {
        SubType::Subscribe => {
            if matches!(item.subscription, None | From) {
                item.ask_out = true;
            }
            // A subscribe makes the contact a roster item (RFC 6121 §3.1.2).
            item.listed = true;
            true
        }
        SubType::Subscribed => {
            if item.pending_in {
                item.subscription = match item.subscription {
                    None => From,
                    To => Both,
                    s => s,
                };
                item.pending_in = false;
                item.listed = true;
                true
            } else {
                false
            }
        }
        SubType::Unsubscribe => {
            item.subscription = match item.subscription {
                To => None,
                Both => From,
                s => s,
            };
            item.ask_out = false;
            true
        }
        SubType::Unsubscribed => {
            let had = item.pending_in || matches!(item.subscription, From | Both);
            item.subscription = match item.subscription {
                From => None,
                Both => To,
                s => s,
            };
            item.pending_in = false;
            had
        }
    };
    Outbound { changed: *item != before, forward }
}

/// What the user's server does with a subscription stanza a contact sends (Appendix A.3).
#[derive(Debug, PartialEq, Eq)]
pub struct Inbound {
    pub changed: bool,
    /// Deliver the stanza to the user's available resources.
    pub deliver: bool,
    /// Answer for the user without bothering them (already subscribed: §3.1.3).
    pub auto_reply: Option<SubType>,
    /// The contact lost its subscription: send it unavailable from every available resource
    /// (§3.3.3).
    pub send_unavailable: bool,
}

pub fn inbound(item: &mut RosterItem, t: SubType) -> Inbound {
    use Subscription::*;
    let before = item.clone();
    let mut out = Inbound { changed: false, deliver: false, auto_reply: Option::None, send_unavailable: false };
    match t {
        SubType::Subscribe => {
            if matches!(item.subscription, From | Both) {
                out.auto_reply = Some(SubType::Subscribed);
            } else {
                out.deliver = !item.pending_in;
                item.pending_in = true;
            }
        }
        SubType::Subscribed => {
            if item.ask_out {
                item.subscription = match item.subscription {
                    None => To,
                    From => Both,
                    s => s,
                };
                item.ask_out = false;
                out.deliver = true;
            }
        }
        SubType::Unsubscribe => {
            if item.pending_in || matches!(item.subscription, From | Both) {
                out.send_unavailable = matches!(item.subscription, From | Both);
                item.subscription = match item.subscription {
                    From => None,
                    Both => To,
                    s => s,
                };
                item.pending_in = false;
                out.deliver = true;
            }
        }
        SubType::Unsubscribed => {
            if item.ask_out || matches!(item.subscription, To | Both) {
                item.subscription = match item.subscription {
                    To => None,
                    Both => From,
                    s => s,
                };
                item.ask_out = false;
                out.deliver = true;
            }
        }
    }
    out.changed = *item != before;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Subscription::*;

    #[test]
    fn full_handshake_reaches_both_on_each_side() {
        let (mut alice_has_bob, mut bob_has_alice) = (new_item("bob@d"), new_item("alice@d"));
        // alice subscribes to bob
        assert!(outbound(&mut alice_has_bob, SubType::Subscribe).forward);
        assert!(alice_has_bob.ask_out);
        assert!(inbound(&mut bob_has_alice, SubType::Subscribe).deliver);
        // bob approves and subscribes back
        assert!(outbound(&mut bob_has_alice, SubType::Subscribed).forward);
        assert_eq!(bob_has_alice.subscription, From);
        assert!(inbound(&mut alice_has_bob, SubType::Subscribed).deliver);
        assert_eq!(alice_has_bob.subscription, To);
        outbound(&mut bob_has_alice, SubType::Subscribe);
        inbound(&mut alice_has_bob, SubType::Subscribe);
        outbound(&mut alice_has_bob, SubType::Subscribed);
        inbound(&mut bob_has_alice, SubType::Subscribed);
        assert_eq!((alice_has_bob.subscription, bob_has_alice.subscription), (Both, Both));
        assert!(!alice_has_bob.ask_out && !bob_has_alice.ask_out);
    }

    #[test]
    fn subscribe_from_a_subscriber_is_answered_automatically() {
        let mut item = new_item("bob@d");
        item.subscription = From;
        assert_eq!(inbound(&mut item, SubType::Subscribe).auto_reply, Some(SubType::Subscribed));
    }

    #[test]
    fn unsolicited_subscribed_is_ignored() {
        let mut item = new_item("bob@d");
        let r = inbound(&mut item, SubType::Subscribed);
        assert!(!r.deliver && !r.changed);
        assert_eq!(item.subscription, None);
    }

    #[test]
    fn approving_without_a_request_is_not_forwarded() {
        let mut item = new_item("bob@d");
        assert_eq!(outbound(&mut item, SubType::Subscribed), Outbound { changed: false, forward: false });
    }

    #[test]
    fn unsubscribe_from_both_leaves_to_and_sends_unavailable() {
        let mut item = new_item("bob@d");
        item.subscription = Both;
        let r = inbound(&mut item, SubType::Unsubscribe);
        assert!(r.deliver && r.send_unavailable);
        assert_eq!(item.subscription, To);
        let mut mine = new_item("alice@d");
        mine.subscription = Both;
        outbound(&mut mine, SubType::Unsubscribed);
        assert_eq!(mine.subscription, To);
    }

    #[test]
    fn repeated_subscribe_is_delivered_once() {
        let mut item = new_item("bob@d");
        assert!(inbound(&mut item, SubType::Subscribe).deliver);
        assert!(!inbound(&mut item, SubType::Subscribe).deliver);
    }
}
