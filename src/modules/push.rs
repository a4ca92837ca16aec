//! XEP-0357 Push Notifications: a client registers an app server's push node, and when a
//! message arrives that none of the user's clients will see now (none online, or every
//! target hibernating under XEP-0198 or inactive under XEP-0352), the user's UserChannel
//! publishes a `urn:xmpp:push:summary` to that node, so the phone is woken to fetch it.
//!
//! With no server-to-server links, the app server must be a client of this server: a full
//! JID on its own domain (an IQ to a bare JID would be answered by the server for the
//! account, RFC 6120 §10.5.4, never reach the app server). That is also why `<enable/>` is
//! read here rather than with xmpp-parsers, whose type only takes bare JIDs.
//! The summary names the sender and a message count, never the body: the app server and
//! the platform's push service are third parties.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jid::Jid;
use minidom::Element;
use serde::{Deserialize, Serialize};
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::pubsub::pubsub::{Item, Publish, PublishOptions};
use xmpp_parsers::pubsub::{NodeName, PubSub};
use xmpp_parsers::push::Notification;

use crate::stanza::{build, to_xml, Kind, Stanza, StanzaError};
use crate::xml::ns;

/// The storage key of a user's registrations.
pub const KEY: &str = "push";

const SUMMARY: &str = "urn:xmpp:push:summary";

/// One app server node a client enabled (§5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// A full JID on this server's domain.
    pub jid: String,
    pub node: String,
    /// The publish-options form given at enable (a secret, say), as XML.
    pub options: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Enable(Registration),
    /// §6: without a node, every node of that app server.
    Disable { jid: String, node: Option<String> },
}

/// Reads `<enable/>` or `<disable/>`; `domain` is the only one an app server may be on.
pub fn parse(payload: &Element, domain: &str) -> Result<Change, StanzaError> {
    let jid = Jid::new(payload.attr("jid").ok_or(StanzaError::BadRequest)?).map_err(|_| StanzaError::JidMalformed)?;
    if jid.domain().as_str() != domain {
        return Err(StanzaError::RemotePushService);
    }
    let node = payload.attr("node").map(str::to_owned);
    match payload.name() {
        "enable" => {
            if jid.resource().is_none() || jid.node().is_none() {
                return Err(StanzaError::NotAcceptable); // only a client session can take the IQ
            }
            let options = match payload.get_child("x", ns::DATA_FORMS) {
                Some(x) => match DataForm::try_from(x.clone()) {
                    Ok(form) if form.form_type() == Some(ns::PUBSUB_PUBLISH_OPTIONS) => Some(to_xml(x)),
                    _ => return Err(StanzaError::BadRequest),
                },
                None => None,
            };
            Ok(Change::Enable(Registration { jid: jid.to_string(), node: node.ok_or(StanzaError::BadRequest)?, options }))
        }
        "disable" => Ok(Change::Disable { jid: jid.to_string(), node }),
        _ => Err(StanzaError::BadRequest),
    }
}

/// Applies `change`; false when it would take the list past `max`.
pub fn apply(list: &mut Vec<Registration>, change: Change, max: usize) -> bool {
    match change {
        Change::Enable(r) => {
            list.retain(|old| (&old.jid, &old.node) != (&r.jid, &r.node));
            if list.len() >= max {
                return false;
            }
            list.push(r);
        }
        Change::Disable { jid, node } => list.retain(|r| r.jid != jid || node.as_ref().is_some_and(|n| *n != r.node)),
    }
    true
}

/// Is this a message a user would want to be woken for? Chats, group chats (XEP-0045) and
/// normal messages with a body: not receipts, chat states, or headlines (PEP events among them).
pub fn worth_a_push(stanza: &Stanza) -> bool {
    stanza.kind == Kind::Message
        && matches!(&*stanza.type_, "" | "normal" | "chat" | "groupchat")
        && stanza.element().get_child("body", ns::CLIENT).is_some()
}

/// The publish to `r`'s node (§7), from the user's bare JID `user`.
pub fn notification(r: &Registration, user: Jid, count: u32, sender: &str) -> Option<Stanza> {
    let to = Jid::new(&r.jid).ok()?;
    let summary = DataForm::new(
        DataFormType::Submit,
        SUMMARY,
        vec![Field::text_single("message-count", &count.to_string()), Field::text_single("last-message-sender", sender)],
    );
    let payload = Notification { form: Some(summary), payloads: vec![] };
    let publish = Publish { node: NodeName(r.node.clone()), items: vec![Item { id: None, publisher: None, payload: Some(payload.into()) }] };
    let options = r.options.as_deref().and_then(|x| x.parse::<Element>().ok()).and_then(|x| DataForm::try_from(x).ok());
    let pubsub: Element = PubSub::Publish { publish, publish_options: options.map(|form| PublishOptions { form: Some(form) }) }.into();
    let id = format!("push{:x}", rand::random::<u64>());
    let iq = build("iq", ns::CLIENT, &[("type", "set"), ("id", &id)], vec![pubsub]);
    Some(Stanza::seal(Kind::Iq, iq, user, to))
}

/// Per-user pacing of pushes on the user's owner core, kept outside the UserChannel, which
/// comes and goes with each message while the user is offline: at most `per_minute` in any
/// minute; the messages held back are counted into the next push's `message-count`.
#[derive(Default)]
pub struct RateLimiter {
    users: RefCell<HashMap<Arc<str>, Window>>,
}

#[derive(Default)]
struct Window {
    sent: VecDeque<Instant>,
    held: u32,
}

const MINUTE: Duration = Duration::from_secs(60);

/// Users tracked at most: past it, those idle for a minute are forgotten, then the one that
/// pushed longest ago (it may then push once more than its share).
const TRACKED_USERS_MAX: usize = 10_000;

impl RateLimiter {
    /// The `message-count` to push now, or `None` when `user` had its share this minute.
    pub fn allow(&self, user: &Arc<str>, per_minute: usize, now: Instant) -> Option<u32> {
        let mut users = self.users.borrow_mut();
        if users.len() >= TRACKED_USERS_MAX && !users.contains_key(user) {
            users.retain(|_, w| w.sent.back().is_some_and(|&t| now.duration_since(t) < MINUTE));
            if users.len() >= TRACKED_USERS_MAX {
                let stalest = users.iter().min_by_key(|(_, w)| w.sent.back().copied()).map(|(u, _)| u.clone());
                users.remove(&stalest.expect("a full table has an entry"));
            }
        }
        let window = users.entry(user.clone()).or_default();
        while window.sent.front().is_some_and(|&t| now.duration_since(t) >= MINUTE) {
            window.sent.pop_front();
        }
        if window.sent.len() >= per_minute {
            window.held += 1;
            return None;
        }
        window.sent.push_back(now);
        Some(std::mem::take(&mut window.held) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn enable_takes_a_local_full_jid_and_a_node() {
        let ok = parse(&el("<enable xmlns='urn:xmpp:push:0' jid='app@localhost/push' node='n1'/>"), "localhost").unwrap();
        assert_eq!(ok, Change::Enable(Registration { jid: "app@localhost/push".into(), node: "n1".into(), options: None }));
        let remote = el("<enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n1'/>");
        assert_eq!(parse(&remote, "localhost"), Err(StanzaError::RemotePushService));
        let bare = el("<enable xmlns='urn:xmpp:push:0' jid='app@localhost' node='n1'/>");
        assert_eq!(parse(&bare, "localhost"), Err(StanzaError::NotAcceptable));
        let no_node = el("<enable xmlns='urn:xmpp:push:0' jid='app@localhost/push'/>");
        assert_eq!(parse(&no_node, "localhost"), Err(StanzaError::BadRequest));
    }

    #[test]
    fn registrations_are_bounded_and_disable_without_node_removes_all_of_a_service() {
        let reg = |jid: &str, node: &str| Registration { jid: jid.into(), node: node.into(), options: None };
        let mut list = Vec::new();
        assert!(apply(&mut list, Change::Enable(reg("a@d/r", "1")), 2));
        assert!(apply(&mut list, Change::Enable(reg("a@d/r", "2")), 2));
        assert!(apply(&mut list, Change::Enable(reg("a@d/r", "2")), 2), "enabling again replaces");
        assert!(!apply(&mut list, Change::Enable(reg("b@d/r", "1")), 2));
        assert!(apply(&mut list, Change::Disable { jid: "a@d/r".into(), node: Some("1".into()) }, 2));
        assert_eq!(list, [reg("a@d/r", "2")]);
        assert!(apply(&mut list, Change::Disable { jid: "a@d/r".into(), node: None }, 2));
        assert!(list.is_empty());
    }

    #[test]
    fn pushes_are_paced_and_held_messages_counted_into_the_next() {
        let limiter = RateLimiter::default();
        let user: Arc<str> = "u@d".into();
        let t0 = Instant::now();
        assert_eq!(limiter.allow(&user, 2, t0), Some(1));
        assert_eq!(limiter.allow(&user, 2, t0), Some(1));
        assert_eq!(limiter.allow(&user, 2, t0 + Duration::from_secs(30)), None);
        assert_eq!(limiter.allow(&user, 2, t0 + Duration::from_secs(59)), None);
        assert_eq!(limiter.allow(&user, 2, t0 + MINUTE), Some(3));
    }

    #[test]
    fn the_pacing_table_stays_bounded_under_a_minute_of_new_users() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..TRACKED_USERS_MAX + 50 {
            let user: Arc<str> = format!("u{i}@d").into();
            assert_eq!(limiter.allow(&user, 1, t0 + Duration::from_millis(i as u64)), Some(1));
        }
        assert_eq!(limiter.users.borrow().len(), TRACKED_USERS_MAX);
        let newest: Arc<str> = format!("u{}@d", TRACKED_USERS_MAX + 49).into();
        assert_eq!(limiter.allow(&newest, 1, t0 + Duration::from_secs(1)), None, "the newest are still paced");
    }

    #[test]
    fn the_notification_is_a_summary_publish_with_the_enable_options() {
        let options = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>s3</value></field></x>";
        let r = Registration { jid: "app@localhost/push".into(), node: "n1".into(), options: Some(options.into()) };
        let iq = notification(&r, Jid::new("u@localhost").unwrap(), 2, "b@localhost").unwrap();
        let xml = iq.xml.to_string();
        for part in ["node='n1'", "urn:xmpp:push:summary", "message-count", "<value>2</value>", "b@localhost", "s3", "to='app@localhost/push'"] {
            assert!(xml.contains(part) || xml.contains(&part.replace('\'', "\"")), "{part} in {xml}");
        }
    }
}
