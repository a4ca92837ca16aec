//! XEP-0077 In-Band Registration, off unless `[registration] enabled = true`: account
//! creation before authentication, password change and account removal after.

use std::rc::Rc;

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::router::{CoreState, Revocation, UserMsg};
use crate::stanza::{build, set_attr, text_el, StanzaError};
use crate::storage::{StorageError, WhenBusy};
use crate::xml::ns;

/// Longest password accepted, in bytes: PBKDF2 cost grows with it.
const PASSWORD_BYTES_MAX: usize = 1024;

fn field(query: &Element, name: &str) -> Option<String> {
    query.get_child(name, ns::REGISTER).map(|e| e.text()).filter(|t| !t.is_empty())
}


/// A registration IQ on a stream that has not authenticated: the form, or a new account
/// if `may_create` (the caller's rate limit, `registrations_per_ip_per_hour`) allows it.
pub async fn unauthenticated(core: &Rc<CoreState>, iq: &Element, may_create: impl FnOnce() -> bool) -> Element {
    let answer = match (iq.attr("type"), iq.get_child("query", ns::REGISTER)) {
        (Some("get"), Some(_)) => {
            let form = vec![
                text_el("instructions", ns::REGISTER, "Choose a username and password."),
                Element::bare("username", ns::REGISTER),
                Element::bare("password", ns::REGISTER),
            ];
            Ok(Some(build("query", ns::REGISTER, &[], form)))
        }
        // XEP-0077 leaves the condition to the server; RFC 6120 §8.3.3.18's
        // <resource-constraint/> is of type "wait", which is what a client should do.
        (Some("set"), Some(_)) if !may_create() => Err(StanzaError::ResourceConstraint),
        (Some("set"), Some(q)) => create(core, q).await.map(|()| None),
        _ => Err(StanzaError::ServiceUnavailable), // nothing else before authentication
    };
    reply(iq, answer)
}

async fn create(core: &Rc<CoreState>, query: &Element) -> Result<(), StanzaError> {
    let (Some(user), Some(password)) = (field(query, "username"), field(query, "password")) else {
        return Err(StanzaError::NotAcceptable);
    };
    if password.len() > PASSWORD_BYTES_MAX || user.contains('@') || user.contains('/') {
        return Err(StanzaError::NotAcceptable);
    }
    let jid = jid::BareJid::new(&format!("{user}@{}", core.cfg.domain)).map_err(|_| StanzaError::JidMalformed)?;
    match core.storage.create_user(jid.to_string(), password, WhenBusy::Refuse).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(StanzaError::Conflict),
        Err(StorageError::Busy) => {
            core.counters.password_hash_busy.inc();
            Err(StanzaError::ResourceConstraint)
        }
        Err(e) => {
            log::error!("registration of {jid}: {e}");
            Err(StanzaError::ResourceConstraint)
        }
    }
}

fn reply(iq: &Element, answer: Result<Option<Element>, StanzaError>) -> Element {
    match answer {
        Ok(payload) => build("iq", ns::CLIENT, &[("type", "result"), ("id", iq.attr("id").unwrap_or(""))], payload.into_iter().collect()),
        Err(e) => {
            let mut r = e.reply_to(iq);
            set_attr(&mut r, "to", None);
            r
        }
    }
}

/// After authentication: show the account, change its password, or remove it.
pub fn authenticated(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let jid = req.user.to_bare().to_string();
        let storage = &req.core.storage;
        match req.iq.attr("type") {
            Some("get") => {
                let node = req.user.node().map(|n| n.to_string()).unwrap_or_default();
                let q = build("query", ns::REGISTER, &[], vec![Element::bare("registered", ns::REGISTER), text_el("username", ns::REGISTER, &node)]);
                IqAnswer::Result(Some(q))
            }
            // XEP-0077 §3.2: the result first (the session writes it before it reads the
            // mail that ends it), then every session of the account gets <not-authorized/>.
            Some("set") if req.payload.get_child("remove", ns::REGISTER).is_some() => match storage.delete_user(jid.clone()).await {
                Ok(_) => {
                    req.core.send_to_user(jid.into(), UserMsg::EndSessions(Revocation::AccountDeleted)).await;
                    IqAnswer::Result(None)
                }
                Err(_) => IqAnswer::Error(StanzaError::ResourceConstraint),
            },
            Some("set") => match field(req.payload, "password") {
                Some(pw) if pw.len() <= PASSWORD_BYTES_MAX => match storage.set_password(jid.clone(), pw, WhenBusy::Refuse).await {
                    Ok(true) => {
                        req.core.send_to_user(jid.into(), UserMsg::EndSessions(Revocation::PasswordChanged)).await;
                        IqAnswer::Result(None)
                    }
                    _ => IqAnswer::Error(StanzaError::ResourceConstraint),
                },
                _ => IqAnswer::Error(StanzaError::BadRequest),
            },
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}
