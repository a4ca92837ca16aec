//! XEP-0045 §7.13 and §8.6: voice requests. A visitor of a moderated room sends the room a
//! `muc#request` data form asking for the participant role; the room hands it on to every
//! moderator as a form to fill in, and a moderator who submits it with `muc#request_allow`
//! true makes that visitor a participant (presence to everyone, as any role change). The
//! room keeps no request besides the time of each occupant's last one: a visitor may ask
//! once per [`VOICE_REQUEST_INTERVAL_SECS`], so no one can flood the moderators through it.

use std::time::{Duration, Instant};

use jid::Jid;
use minidom::Element;

use super::Room;
use crate::muc::occupants::Role;
use crate::muc::room_config::{data_form, field, form_value as value, hidden};
use crate::stanza::{build, text_el, Kind, Stanza, StanzaError};
use crate::xml::ns;

/// Shortest time between two voice requests of one occupant, in seconds (ejabberd's
/// `voice_request_min_interval` is 1800; a minute lets a visitor ask again after a
/// moderator missed it, and still bounds what reaches the moderators).
const VOICE_REQUEST_INTERVAL_SECS: u64 = 60;

/// The `muc#request` form a message carries, if it is one.
pub fn request_form(message: &Element) -> Option<&Element> {
    message
        .children()
        .filter(|c| c.is("x", ns::DATA_FORMS))
        .find(|x| value(x, "FORM_TYPE").as_deref() == Some(ns::MUC_REQUEST))
}

impl Room {
    /// A `muc#request` form from the occupant `sender`: a moderator's answer when it carries
    /// `muc#request_allow`, else a request.
    pub(super) async fn voice_form(&mut self, sender: Option<String>, form: &Element) -> Result<(), StanzaError> {
        let Some(sender) = sender else { return Err(StanzaError::NotAcceptable) }; // occupants only
        let role = self.occupants.get(&sender).map_or(Role::None, |o| o.role);
        if let Some(allow) = value(form, "muc#request_allow") {
            if role != Role::Moderator {
                return Err(StanzaError::Forbidden);
            }
            let nick = value(form, "muc#roomnick").ok_or(StanzaError::BadRequest)?;
            let granted = matches!(allow.as_str(), "1" | "true");
            if let Some(o) = self.occupants.get_mut(&nick).filter(|o| granted && o.role == Role::Visitor) {
                o.role = Role::Participant;
                self.broadcast_presence(&nick, &[], None).await;
            }
            return Ok(());
        }
        if value(form, "muc#role").as_deref() != Some(Role::Participant.as_str()) {
            return Err(StanzaError::BadRequest);
        }
        if role != Role::Visitor {
            return Ok(()); // it has voice already: nothing to ask
        }
        let now = Instant::now();
        let Some(occupant) = self.occupants.get_mut(&sender) else { return Ok(()) };
        if occupant.voice_requested_at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(VOICE_REQUEST_INTERVAL_SECS)) {
            return Err(StanzaError::ResourceConstraint);
        }
        occupant.voice_requested_at = Some(now);
        let real_jid = occupant.jid.to_string();
        let approval = data_form(
            "form",
            vec![
                text_el("title", ns::DATA_FORMS, "Voice request"),
                text_el("instructions", ns::DATA_FORMS, "To give this occupant voice, check the box and submit the form."),
                hidden("FORM_TYPE", ns::MUC_REQUEST),
                field("muc#role", "list-single", "Requested role", &[Role::Participant.as_str()]),
                field("muc#jid", "jid-single", "User ID", &[&real_jid]),
                field("muc#roomnick", "text-single", "Room nickname", &[&sender]),
                field("muc#request_allow", "boolean", "Grant voice to this person?", &["false"]),
            ],
        );
        let message = build("message", ns::CLIENT, &[], vec![approval]);
        let moderators: Vec<Jid> = self.occupants.iter().filter(|o| o.role == Role::Moderator).map(|o| Jid::from(o.jid.clone())).collect();
        for to in moderators {
            self.core.route(Stanza::seal(Kind::Message, message.clone(), Jid::from(self.jid.clone()), to)).await;
        }
        Ok(())
    }
}
