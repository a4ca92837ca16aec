//! XEP-0045 §10.2: a room's configuration, the `muc#roomconfig` XEP-0004 form an owner
//! gets and submits, and the `muc#roominfo` extension of its disco#info (§6.4).

use minidom::Element;
use serde::{Deserialize, Serialize};

use super::occupants::Role;
use crate::stanza::{build, text_el, StanzaError};
use crate::xml::ns;

/// Who may send private messages through the room (`muc#roomconfig_allowpm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllowPm {
    Anyone,
    Participants,
    Moderators,
    None,
}

impl AllowPm {
    fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }

    fn parse(text: &str) -> Option<AllowPm> {
        Some(match text {
            "anyone" => AllowPm::Anyone,
            "participants" => AllowPm::Participants,
            "moderators" => AllowPm::Moderators,
            "none" => AllowPm::None,
            _ => return None,
        })
    }

    pub fn allows(self, role: Role) -> bool {
        match self {
            AllowPm::Anyone => role >= Role::Visitor,
            AllowPm::Participants => role >= Role::Participant,
            AllowPm::Moderators => role >= Role::Moderator,
            AllowPm::None => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub moderated: bool,
    /// `Some` when the room is password-protected.
    pub password: Option<String>,
    pub max_occupants: usize,
    /// Everyone sees real JIDs (non-anonymous); else only moderators (semi-anonymous).
    pub whois_anyone: bool,
    /// The roles whose presence is broadcast (`muc#roomconfig_presencebroadcast`): a big
    /// room that leaves out visitors sends no join of theirs to everyone.
    pub presence_broadcast: Vec<String>,
    pub history_length: usize,
    pub allow_pm: AllowPm,
    /// Participants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// Groupchat messages go into the room's archive (XEP-0313).
    pub archive: bool,
    /// Participants may invite others to a members-only room (and make them members).
    pub allow_invites: bool,
}

/// History a new room keeps unless configured otherwise.
const HISTORY_LENGTH_DEFAULT: usize = 20;
/// Longest name or description, in bytes.
const TEXT_BYTES_MAX: usize = 1024;

impl RoomConfig {
    pub fn new(occupants_max: usize, history_max: usize, archive: bool) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            moderated: false,
            password: None,
            max_occupants: occupants_max,
            whois_anyone: false,
            presence_broadcast: vec!["moderator".into(), "participant".into(), "visitor".into()],
            history_length: HISTORY_LENGTH_DEFAULT.min(history_max),
            allow_pm: AllowPm::Anyone,
            change_subject: false,
            archive,
            allow_invites: false,
        }
    }

    pub fn broadcasts(&self, role: Role) -> bool {
        self.presence_broadcast.iter().any(|r| r == role.as_str())
    }

    /// The form an owner fills in (§10.2).
    pub fn form(&self, occupants_max: usize) -> Element {
        let b = |v: bool| if v { "1" } else { "0" };
        let max = self.max_occupants.to_string();
        let limit = occupants_max.to_string();
        let history = self.history_length.to_string();
        let mut fields = vec![
            hidden("FORM_TYPE", ns::MUC_ROOMCONFIG),
            field("muc#roomconfig_roomname", "text-single", "Name", &[&self.name]),
            field("muc#roomconfig_roomdesc", "text-single", "Description", &[&self.description]),
            field("muc#roomconfig_persistentroom", "boolean", "Persistent", &[b(self.persistent)]),
            field("muc#roomconfig_publicroom", "boolean", "Listed in the directory", &[b(self.public)]),
            field("muc#roomconfig_membersonly", "boolean", "Members only", &[b(self.members_only)]),
            field("muc#roomconfig_moderatedroom", "boolean", "Moderated", &[b(self.moderated)]),
            field("muc#roomconfig_passwordprotectedroom", "boolean", "Password protected", &[b(self.password.is_some())]),
            field("muc#roomconfig_roomsecret", "text-private", "Password", &[self.password.as_deref().unwrap_or("")]),
            field("muc#roomconfig_maxusers", "text-single", &format!("Maximum occupants (up to {limit})"), &[&max]),
            list("muc#roomconfig_whois", "list-single", "Who may see real JIDs", &[if self.whois_anyone { "anyone" } else { "moderators" }], &["moderators", "anyone"]),
            list(
                "muc#roomconfig_presencebroadcast",
                "list-multi",
                "Roles whose presence is broadcast",
                &self.presence_broadcast.iter().map(String::as_str).collect::<Vec<_>>(),
                &["moderator", "participant", "visitor"],
            ),
            field("muc#maxhistoryfetch", "text-single", "Messages of history sent to joiners", &[&history]),
            list("muc#roomconfig_allowpm", "list-single", "Who may send private messages", &[self.allow_pm.as_str()], &["anyone", "participants", "moderators", "none"]),
            field("muc#roomconfig_changesubject", "boolean", "Participants may change the subject", &[b(self.change_subject)]),
            field("muc#roomconfig_enablearchiving", "boolean", "Archive messages (XEP-0313)", &[b(self.archive)]),
            field("muc#roomconfig_allowinvites", "boolean", "Participants may invite", &[b(self.allow_invites)]),
        ];
        fields.insert(1, text_el("title", ns::DATA_FORMS, "Room configuration"));
        build("x", ns::DATA_FORMS, &[("type", "form")], fields)
    }

    /// Applies a submitted form; fields it leaves out keep their values (§10.2). Values
    /// out of range are `<not-acceptable/>`, and nothing changes.
    pub fn apply(&mut self, form: &Element, occupants_max: usize, history_max: usize) -> Result<(), StanzaError> {
        let mut next = self.clone();
        let mut password_protected = None;
        for f in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let values: Vec<String> = f.children().filter(|v| v.is("value", ns::DATA_FORMS)).map(|v| v.text()).collect();
            let one = values.first().map(String::as_str).unwrap_or("");
            let flag = || match one {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                _ => Err(StanzaError::NotAcceptable),
            };
            let text = || if one.len() > TEXT_BYTES_MAX { Err(StanzaError::NotAcceptable) } else { Ok(one.to_owned()) };
            let count = |max: usize| one.trim().parse::<usize>().ok().filter(|n| *n <= max).ok_or(StanzaError::NotAcceptable);
            match f.attr("var").unwrap_or("") {
                "muc#roomconfig_roomname" => next.name = text()?,
                "muc#roomconfig_roomdesc" => next.description = text()?,
                "muc#roomconfig_persistentroom" => next.persistent = flag()?,
                "muc#roomconfig_publicroom" => next.public = flag()?,
                "muc#roomconfig_membersonly" => next.members_only = flag()?,
                "muc#roomconfig_moderatedroom" => next.moderated = flag()?,
                "muc#roomconfig_passwordprotectedroom" => password_protected = Some(flag()?),
                "muc#roomconfig_roomsecret" => next.password = Some(text()?).filter(|p| !p.is_empty()),
                "muc#roomconfig_maxusers" if one.is_empty() || one == "none" => next.max_occupants = occupants_max,
                "muc#roomconfig_maxusers" => next.max_occupants = count(occupants_max)?.max(1),
                "muc#roomconfig_whois" => next.whois_anyone = one == "anyone",
                "muc#roomconfig_presencebroadcast" => {
                    if values.iter().any(|v| Role::parse(v).is_none_or(|r| r == Role::None)) {
                        return Err(StanzaError::NotAcceptable);
                    }
                    next.presence_broadcast = values;
                }
                "muc#maxhistoryfetch" | "muc#roomconfig_historylength" => next.history_length = count(history_max)?,
                "muc#roomconfig_allowpm" => next.allow_pm = AllowPm::parse(one).ok_or(StanzaError::NotAcceptable)?,
                "muc#roomconfig_changesubject" => next.change_subject = flag()?,
                "muc#roomconfig_enablearchiving" | "muc#roomconfig_enablelogging" => next.archive = flag()?,
                "muc#roomconfig_allowinvites" => next.allow_invites = flag()?,
                _ => {}
            }
        }
        if password_protected == Some(false) {
            next.password = None;
        }
        *self = next;
        Ok(())
    }

    /// The features of the room's disco#info (§6.4).
    pub fn features(&self, archiving: bool) -> Vec<&'static str> {
        let pick = |v: bool, yes, no| if v { yes } else { no };
        let mut f = vec![
            ns::MUC,
            ns::DISCO_INFO,
            pick(self.persistent, "muc_persistent", "muc_temporary"),
            pick(self.public, "muc_public", "muc_hidden"),
            pick(self.members_only, "muc_membersonly", "muc_open"),
            pick(self.moderated, "muc_moderated", "muc_unmoderated"),
            pick(self.password.is_some(), "muc_passwordprotected", "muc_unsecured"),
            pick(self.whois_anyone, "muc_nonanonymous", "muc_semianonymous"),
            ns::OCCUPANT_ID,
            ns::PING,
            ns::MUC_REQUEST,
            ns::REGISTER,
        ];
        if archiving {
            f.push(ns::MAM);
            f.push(ns::SID);
        }
        f
    }

    /// `muc#roominfo` (§6.4): the description and occupant count clients show.
    pub fn info_form(&self, occupants: usize, subject: &str) -> Element {
        data_form(
            "result",
            vec![
                hidden("FORM_TYPE", ns::MUC_ROOMINFO),
                field("muc#roominfo_description", "text-single", "Description", &[&self.description]),
                field("muc#roominfo_occupants", "text-single", "Occupants", &[&occupants.to_string()]),
                field("muc#roominfo_subject", "text-single", "Subject", &[subject]),
            ],
        )
    }
}

/// The first value of field `var` of a submitted data form.
pub(super) fn form_value(form: &Element, var: &str) -> Option<String> {
    let f = form.children().find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some(var))?;
    f.get_child("value", ns::DATA_FORMS).map(|v| v.text())
}

/// A XEP-0004 data form of `type_` ("form", "result").
pub(super) fn data_form(type_: &str, children: Vec<Element>) -> Element {
    build("x", ns::DATA_FORMS, &[("type", type_)], children)
}

pub(super) fn hidden(var: &str, value: &str) -> Element {
    build("field", ns::DATA_FORMS, &[("var", var), ("type", "hidden")], vec![text_el("value", ns::DATA_FORMS, value)])
}

pub(super) fn field(var: &str, type_: &str, label: &str, values: &[&str]) -> Element {
    let values = values.iter().map(|v| text_el("value", ns::DATA_FORMS, v)).collect();
    build("field", ns::DATA_FORMS, &[("var", var), ("type", type_), ("label", label)], values)
}

fn list(var: &str, type_: &str, label: &str, values: &[&str], options: &[&str]) -> Element {
    let mut f = field(var, type_, label, values);
    for o in options {
        f.append_child(build("option", ns::DATA_FORMS, &[("label", o)], vec![text_el("value", ns::DATA_FORMS, o)]));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &[&str])]) -> Element {
        let children = fields
            .iter()
            .map(|(var, values)| {
                build("field", ns::DATA_FORMS, &[("var", var)], values.iter().map(|v| text_el("value", ns::DATA_FORMS, v)).collect())
            })
            .collect();
        build("x", ns::DATA_FORMS, &[("type", "submit")], children)
    }

    #[test]
    fn a_submitted_form_changes_what_it_names_only() {
        let mut c = RoomConfig::new(100, 50, true);
        let form = submit(&[
            ("muc#roomconfig_roomname", &["Lobby"]),
            ("muc#roomconfig_persistentroom", &["1"]),
            ("muc#roomconfig_passwordprotectedroom", &["1"]),
            ("muc#roomconfig_roomsecret", &["s3"]),
            ("muc#roomconfig_presencebroadcast", &["moderator"]),
        ]);
        c.apply(&form, 100, 50).unwrap();
        assert_eq!((c.name.as_str(), c.persistent, c.password.as_deref()), ("Lobby", true, Some("s3")));
        assert!(c.broadcasts(Role::Moderator) && !c.broadcasts(Role::Visitor));
        assert!(c.public, "left out: unchanged");
    }

    #[test]
    fn out_of_range_values_change_nothing() {
        let mut c = RoomConfig::new(100, 50, true);
        let before = c.clone();
        assert_eq!(c.apply(&submit(&[("muc#roomconfig_roomname", &["x"]), ("muc#roomconfig_maxusers", &["101"])]), 100, 50), Err(StanzaError::NotAcceptable));
        assert_eq!(c.apply(&submit(&[("muc#roomconfig_presencebroadcast", &["none"])]), 100, 50), Err(StanzaError::NotAcceptable));
        assert_eq!(c, before);
    }

    #[test]
    fn the_form_reads_back_as_the_same_configuration() {
        let mut c = RoomConfig::new(100, 50, true);
        c.name = "n".into();
        c.moderated = true;
        let mut form = c.form(100);
        crate::stanza::set_attr(&mut form, "type", Some("submit".into()));
        let mut back = RoomConfig::new(100, 50, false);
        back.apply(&form, 100, 50).unwrap();
        assert_eq!(back, c);
    }
}
