//! XEP-0045 §7.10: registering with a room. An occupant-to-be asks the room for its
//! registration form (`jabber:iq:register`), submits a nick, and becomes a member whose nick
//! is reserved: no other account may enter under it (§7.2.9 conflict). The reserved nicks
//! are kept with the affiliations, in the room's stored state. `<remove/>` gives the
//! registration back. In a members-only room only members may register (their nick).

use std::collections::BTreeMap;

use minidom::Element;

use super::{Room, NICK_BYTES_MAX};
use crate::modules::IqAnswer;
use crate::muc::occupants::Affiliation;
use crate::muc::room_config::{data_form, field, form_value as value, hidden};
use crate::stanza::{build, text_el, StanzaError};
use crate::xml::ns;

/// The registration form's FORM_TYPE.
const MUC_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// Nicks one room reserves at most: past it, a new registration gets `<resource-constraint/>`.
const RESERVED_NICKS_MAX: usize = 10_000;

/// Whether a registration by `bare` would take a room with `reserved` (nick -> account)
/// past RESERVED_NICKS_MAX: one that already holds a nick replaces it and adds none.
fn over_reserved_nicks_max(reserved: &BTreeMap<String, String>, bare: &str) -> bool {
    reserved.len() >= RESERVED_NICKS_MAX && !reserved.values().any(|owner| owner == bare)
}

impl Room {
    /// The nick `bare` (an account) reserved here, if any.
    pub(super) fn reserved_nick_of(&self, bare: &str) -> Option<&str> {
        self.reserved_nicks.iter().find(|(_, owner)| owner.as_str() == bare).map(|(nick, _)| nick.as_str())
    }

    /// Whether `nick` is reserved by an account other than `bare`.
    pub(super) fn nick_reserved_by_other(&self, nick: &str, bare: &str) -> bool {
        self.reserved_nicks.get(nick).is_some_and(|owner| owner != bare)
    }

    /// Forgets `bare`'s reserved nick (its registration was removed, or it is a member no more).
    pub(super) fn release_nick_of(&mut self, bare: &str) {
        self.reserved_nicks.retain(|_, owner| owner != bare);
    }

    pub(super) async fn register_iq(&mut self, bare: &str, type_: &str, payload: &Element) -> IqAnswer {
        let affiliation = self.affiliation_of(bare);
        if affiliation == Affiliation::Outcast {
            return IqAnswer::Error(StanzaError::Forbidden);
        }
        let may_register = !self.config.members_only || affiliation >= Affiliation::Member;
        if type_ == "get" {
            let query = match self.reserved_nick_of(bare) {
                Some(nick) => vec![Element::bare("registered", ns::REGISTER), text_el("username", ns::REGISTER, nick)],
                None if !may_register => return IqAnswer::Error(StanzaError::NotAllowed),
                None => {
                    let form = data_form(
                        "form",
                        vec![
                            text_el("title", ns::DATA_FORMS, "Register with the room"),
                            hidden("FORM_TYPE", MUC_REGISTER),
                            field("muc#register_roomnick", "text-single", "Nickname", &[]),
                        ],
                    );
                    vec![text_el("instructions", ns::REGISTER, "Choose the nickname reserved for you in this room."), form]
                }
            };
            return IqAnswer::Result(Some(build("query", ns::REGISTER, &[], query)));
        }
        if payload.get_child("remove", ns::REGISTER).is_some() {
            if self.reserved_nick_of(bare).is_none() {
                return IqAnswer::Error(StanzaError::ItemNotFound);
            }
            self.release_nick_of(bare);
            if affiliation == Affiliation::Member {
                self.set_affiliation(bare, Affiliation::None, None).await;
            }
            self.save().await;
            return IqAnswer::Result(None);
        }
        let Some(form) = payload.get_child("x", ns::DATA_FORMS) else { return IqAnswer::Error(StanzaError::BadRequest) };
        if form.attr("type") == Some("cancel") {
            return IqAnswer::Result(None);
        }
        if !may_register {
            return IqAnswer::Error(StanzaError::NotAllowed);
        }
        let nick = value(form, "muc#register_roomnick").unwrap_or_default();
        if nick.is_empty() || nick.len() > NICK_BYTES_MAX {
            return IqAnswer::Error(StanzaError::NotAcceptable);
        }
        if self.nick_reserved_by_other(&nick, bare) {
            return IqAnswer::Error(StanzaError::Conflict);
        }
        if over_reserved_nicks_max(&self.reserved_nicks, bare) {
            return IqAnswer::Error(StanzaError::ResourceConstraint);
        }
        self.release_nick_of(bare);
        self.reserved_nicks.insert(nick, bare.to_owned());
        if affiliation < Affiliation::Member {
            self.set_affiliation(bare, Affiliation::Member, None).await;
        }
        self.save().await;
        IqAnswer::Result(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_refuses_a_new_nick_and_lets_a_holder_register_again() {
        let mut reserved: BTreeMap<String, String> = (0..RESERVED_NICKS_MAX - 1).map(|i| (format!("n{i}"), format!("u{i}@d"))).collect();
        assert!(!over_reserved_nicks_max(&reserved, "new@d"), "the 10,000th nick is taken");
        reserved.insert("last".into(), "last@d".into());
        assert!(over_reserved_nicks_max(&reserved, "new@d"), "the 10,001st is refused");
        assert!(!over_reserved_nicks_max(&reserved, "u7@d"), "a holder may change its nick");
        assert!(!over_reserved_nicks_max(&reserved, "last@d"));
    }
}
