//! What the operator asks of a room through the admin socket (`martlet room info|create|
//! destroy`, `crate::admin`): answered by the room's actor on its owner core, wherever
//! that is, as text for the terminal.

use std::fmt::Write;

use minidom::Element;

use super::Room;
use crate::muc::occupants::Affiliation;
use crate::router::{AdminAnswer, RoomAdminOp};
use crate::stanza::{text_el, StanzaError};
use crate::xml::ns;

fn answer(ok: bool, text: String) -> AdminAnswer {
    AdminAnswer { ok, text }
}

impl Room {
    pub(super) async fn admin(&mut self, op: RoomAdminOp) -> AdminAnswer {
        match op {
            RoomAdminOp::Info if self.exists => answer(true, self.info()),
            RoomAdminOp::Create { owner, name, public } if !self.exists => self.create_by_operator(owner, name, public).await,
            RoomAdminOp::Destroy { reason } if self.exists => {
                let told = self.occupants.len();
                let mut destroy = Element::bare("destroy", ns::MUC_OWNER);
                if let Some(reason) = reason {
                    destroy.append_child(text_el("reason", ns::MUC_OWNER, &reason));
                }
                self.destroy(&destroy).await;
                answer(true, format!("destroyed {}; {told} occupants told\n", self.key))
            }
            RoomAdminOp::Create { .. } => answer(false, format!("{} exists", self.key)),
            RoomAdminOp::Info | RoomAdminOp::Destroy { .. } => answer(false, format!("no room {}", self.key)),
        }
    }

    /// §10.1.2's instant room, made by the operator: persistent and open at once, `owner`
    /// its owner (who need not be online).
    async fn create_by_operator(&mut self, owner: String, name: String, public: bool) -> AdminAnswer {
        if let Err(e) = self.core.muc_directory.create_by_operator(&self.key) {
            let why = if e == StanzaError::ResourceConstraint { "the service holds rooms_max rooms".to_string() } else { format!("{e:?}") };
            return answer(false, format!("{} not created: {why}", self.key));
        }
        self.exists = true;
        self.locked = false;
        self.config.persistent = true;
        self.config.public = public;
        self.config.name = name;
        self.affiliations.insert(owner.clone(), Affiliation::Owner);
        self.core.counters.muc_rooms_created.inc();
        self.save().await;
        answer(true, format!("created {} (persistent, {}), owner {owner}\n", self.key, if public { "public" } else { "hidden" }))
    }

    fn info(&self) -> String {
        let c = &self.config;
        let yes = |b: bool| if b { "yes" } else { "no" };
        let mut out = String::new();
        let _ = writeln!(out, "room: {}", self.key);
        let _ = writeln!(out, "name: {}", c.name);
        let _ = writeln!(out, "persistent: {}  public: {}  members-only: {}  moderated: {}  password: {}  locked: {}",
            yes(c.persistent), yes(c.public), yes(c.members_only), yes(c.moderated), yes(c.password.is_some()), yes(self.locked));
        let _ = writeln!(out, "occupants: {} of {}", self.occupants.len(), c.max_occupants.min(self.core.cfg.muc.occupants_max));
        for affiliation in [Affiliation::Owner, Affiliation::Admin, Affiliation::Member, Affiliation::Outcast] {
            let jids: Vec<&str> = self.affiliations.iter().filter(|(_, a)| **a == affiliation).map(|(j, _)| j.as_str()).collect();
            let _ = writeln!(out, "{}s: {}", affiliation.as_str(), if jids.is_empty() { "-".to_string() } else { jids.join(" ") });
        }
        let _ = writeln!(out, "subject: {}", self.subject.as_ref().map(|s| s.text.as_str()).unwrap_or("-"));
        let _ = writeln!(out, "history: {} messages kept (of {})", self.history.len(), c.history_length);
        out
    }
}
