//! XEP-0045 §5: roles (in the room now) and affiliations (with the room, kept), the
//! occupants of a room, and the `<x xmlns='...muc#user'/>` each recipient of an occupant's
//! presence sees: its real JID only where the room shows it (§7.2.3-4).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jid::FullJid;
use minidom::Element;
use serde::{Deserialize, Serialize};

use crate::router::SessionAddr;
use crate::stanza::build;
use crate::xml::ns;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    None,
    Visitor,
    Participant,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// Ordered by privilege: an actor may act on those below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Affiliation {
    Outcast,
    None,
    Member,
    Admin,
    Owner,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Affiliation> {
        Some(match text {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }

    /// The role an occupant with this affiliation enters with (§5.1.2).
    pub fn default_role(self, moderated: bool) -> Role {
        match self {
            Affiliation::Owner | Affiliation::Admin => Role::Moderator,
            Affiliation::Member => Role::Participant,
            Affiliation::None if moderated => Role::Visitor,
            Affiliation::None => Role::Participant,
            Affiliation::Outcast => Role::None,
        }
    }
}

pub struct Occupant {
    pub nick: String,
    pub jid: FullJid,
    pub role: Role,
    pub affiliation: Affiliation,
    /// What the client's presence carried (show, status, caps...), without its `<x/>`.
    pub presence: Vec<Element>,
    /// XEP-0421: the same for this account in this room, whatever its nick.
    pub occupant_id: String,
    /// §7.13: when this occupant last asked for voice (`room::voice` paces them).
    pub voice_requested_at: Option<std::time::Instant>,
    /// The session its presence came from: the room sends it copies there directly
    /// (`SessionMsg::FromRoom`). `None` when the presence came another way; copies then go
    /// through the user's UserChannel.
    pub session: Option<SessionAddr>,
}

/// A room's occupants by nick; an account holds at most one nick (a second resource
/// joining under the same nick takes the occupant over). Indexed by full JID and by
/// account too: every stanza from an occupant is looked up by its sender, and in a room
/// of 10,000 a scan per stanza would be 10,000 comparisons.
#[derive(Default)]
pub struct Occupants {
    by_nick: BTreeMap<String, Occupant>,
    nick_by_jid: HashMap<FullJid, String>,
    nicks_by_account: HashMap<String, BTreeSet<String>>,
}

impl Occupants {
    pub fn len(&self) -> usize {
        self.by_nick.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_nick.is_empty()
    }

    pub fn get(&self, nick: &str) -> Option<&Occupant> {
        self.by_nick.get(nick)
    }

    /// For its role, affiliation, presence and session; never its nick or JID, which the
    /// indexes hold (a nick change removes the occupant and inserts it again).
    pub fn get_mut(&mut self, nick: &str) -> Option<&mut Occupant> {
        self.by_nick.get_mut(nick)
    }

    /// The nick `jid` (a full JID) is in the room under.
    pub fn nick_of(&self, jid: &FullJid) -> Option<String> {
        self.nick_by_jid.get(jid).cloned()
    }

    /// The nicks of the account `bare` (one at most, see the type).
    pub fn nicks_of_account(&self, bare: &str) -> Vec<String> {
        self.nicks_by_account.get(bare).map(|nicks| nicks.iter().cloned().collect()).unwrap_or_default()
    }

    /// Adds `occupant`, replacing whoever held its nick.
    pub fn insert(&mut self, occupant: Occupant) {
        self.remove(&occupant.nick);
        self.nick_by_jid.insert(occupant.jid.clone(), occupant.nick.clone());
        self.nicks_by_account.entry(occupant.jid.to_bare().to_string()).or_default().insert(occupant.nick.clone());
        self.by_nick.insert(occupant.nick.clone(), occupant);
    }

    pub fn remove(&mut self, nick: &str) -> Option<Occupant> {
        let gone = self.by_nick.remove(nick)?;
        if self.nick_by_jid.get(&gone.jid).is_some_and(|n| n == nick) {
            self.nick_by_jid.remove(&gone.jid);
        }
        let account = gone.jid.to_bare().to_string();
        if let Some(nicks) = self.nicks_by_account.get_mut(&account) {
            nicks.remove(nick);
            if nicks.is_empty() {
                self.nicks_by_account.remove(&account);
            }
        }
        Some(gone)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Occupant> {
        self.by_nick.values()
    }

    pub fn nicks(&self) -> Vec<String> {
        self.by_nick.keys().cloned().collect()
    }
}

/// What goes with one occupant's presence to one recipient.
pub struct Presented<'a> {
    pub occupant: &'a Occupant,
    /// The recipient may see real JIDs (the room is non-anonymous, or it is a moderator).
    pub show_jid: bool,
    /// Status codes (§15.6), sorted as given.
    pub codes: &'a [u16],
    /// Extra children of the `<item/>` (actor, reason) or of the `<x/>` (destroy).
    pub item_children: Vec<Element>,
    pub x_children: Vec<Element>,
    /// A nick change (303): the new nick, on the item.
    pub new_nick: Option<&'a str>,
}

impl Presented<'_> {
    /// The `<x xmlns='...muc#user'/>` of the presence.
    pub fn muc_user(self) -> Element {
        let o = self.occupant;
        let jid = o.jid.to_string();
        let mut attrs = vec![("affiliation", o.affiliation.as_str()), ("role", o.role.as_str())];
        if self.show_jid {
            attrs.push(("jid", jid.as_str()));
        }
        if let Some(nick) = self.new_nick {
            attrs.push(("nick", nick));
        }
        let mut children = vec![build("item", ns::MUC_USER, &attrs, self.item_children)];
        children.extend(self.codes.iter().map(|c| build("status", ns::MUC_USER, &[("code", &c.to_string())], vec![])));
        children.extend(self.x_children);
        build("x", ns::MUC_USER, &[], children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupant(nick: &str, jid: &str) -> Occupant {
        Occupant {
            nick: nick.into(),
            jid: FullJid::new(jid).unwrap(),
            role: Role::Participant,
            affiliation: Affiliation::None,
            presence: vec![],
            occupant_id: "x".into(),
            voice_requested_at: None,
            session: None,
        }
    }

    #[test]
    fn the_real_jid_goes_only_where_it_may() {
        let o = occupant("ann", "a@d/r");
        let hidden = crate::stanza::to_xml(&Presented { occupant: &o, show_jid: false, codes: &[110], item_children: vec![], x_children: vec![], new_nick: None }.muc_user());
        assert!(!hidden.contains("a@d/r") && hidden.contains("code='110'"), "{hidden}");
        let shown = crate::stanza::to_xml(&Presented { occupant: &o, show_jid: true, codes: &[], item_children: vec![], x_children: vec![], new_nick: None }.muc_user());
        assert!(shown.contains("jid='a@d/r'"), "{shown}");
    }

    #[test]
    fn an_account_is_found_by_its_full_jid_and_its_bare_jid() {
        let mut all = Occupants::default();
        all.insert(occupant("ann", "a@d/r"));
        assert_eq!(all.nick_of(&FullJid::new("a@d/r").unwrap()).as_deref(), Some("ann"));
        assert_eq!(all.nick_of(&FullJid::new("a@d/other").unwrap()), None);
        assert_eq!(all.nicks_of_account("a@d"), ["ann"]);
    }

    #[test]
    fn the_indexes_follow_takeovers_and_removals() {
        let mut all = Occupants::default();
        all.insert(occupant("ann", "a@d/r1"));
        // The same account from another resource under the same nick takes it over.
        all.insert(occupant("ann", "a@d/r2"));
        assert_eq!(all.nick_of(&FullJid::new("a@d/r1").unwrap()), None);
        assert_eq!(all.nick_of(&FullJid::new("a@d/r2").unwrap()).as_deref(), Some("ann"));
        all.insert(occupant("bob", "b@d/r"));
        assert_eq!(all.remove("ann").map(|o| o.jid.to_string()).as_deref(), Some("a@d/r2"));
        assert!(all.nicks_of_account("a@d").is_empty());
        assert_eq!(all.nick_of(&FullJid::new("a@d/r2").unwrap()), None);
        assert_eq!(all.nicks_of_account("b@d"), ["bob"]);
        assert_eq!(all.len(), 1);
    }

    #[test]
    fn affiliations_rank_and_give_roles() {
        assert!(Affiliation::Owner > Affiliation::Admin && Affiliation::Member > Affiliation::None && Affiliation::None > Affiliation::Outcast);
        assert_eq!(Affiliation::None.default_role(true), Role::Visitor);
        assert_eq!(Affiliation::Member.default_role(true), Role::Participant);
        assert_eq!(Affiliation::Admin.default_role(false), Role::Moderator);
    }
}
