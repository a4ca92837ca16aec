//! Namespace names, each labelled with the document that defines it.

/// RFC 6120 §4.8.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.8.2: the default namespace of client streams.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 §5.4.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6.4.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// XEP-0388 Extensible SASL Profile (SASL2).
pub const SASL2: &str = "urn:xmpp:sasl:2";
/// XEP-0386 Bind 2.
pub const BIND2: &str = "urn:xmpp:bind:0";
/// XEP-0484 Fast Authentication Streamlining Tokens.
pub const FAST: &str = "urn:xmpp:fast:0";
/// RFC 6120 §7.4.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 (legacy), answered for old clients and load tools (RFC 6121 appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6120 §4.9.3.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3.
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// RFC 6121 §2.
pub const ROSTER: &str = "jabber:iq:roster";
/// XEP-0030.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0092.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0199.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0077.
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0203, stamped on messages delivered from offline storage (XEP-0160).
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0160: the feature clients look for in disco.
pub const OFFLINE: &str = "msgoffline";
/// XEP-0198 Stream Management.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0280 Message Carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 Message Processing Hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0012 Last Activity.
pub const LAST: &str = "jabber:iq:last";
/// XEP-0085 Chat State Notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0352 Client State Indication.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0313 Message Archive Management.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0359 Unique and Stable Stanza IDs.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0059 Result Set Management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0004 Data Forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0049 Private XML Storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0054 vcard-temp.
pub const VCARD: &str = "vcard-temp";
/// XEP-0191 Blocking Command, and its error payload.
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0186 Invisible Command.
pub const INVISIBLE: &str = "urn:xmpp:invisible:0";
/// XEP-0237 Roster Versioning, the stream feature.
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// XEP-0060 Publish-Subscribe: requests, event notifications, errors, publish options.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// XEP-0115 Entity Capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0084 User Avatar: the image node and the metadata node.
pub const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
pub const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0357 Push Notifications.
pub const PUSH: &str = "urn:xmpp:push:0";

/// XEP-0045 Multi-User Chat.
pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const MUC_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0045 §7.13 voice requests (a data form's FORM_TYPE, and a room feature).
pub const MUC_REQUEST: &str = "http://jabber.org/protocol/muc#request";
/// XEP-0249 direct invitations.
pub const CONFERENCE: &str = "jabber:x:conference";
/// XEP-0421 anonymous unique occupant identifiers.
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
