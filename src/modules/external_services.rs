//! XEP-0215 External Service Discovery: the STUN and TURN servers clients use for Jingle
//! calls (`[[external_services]]`), with time-limited TURN credentials from a secret
//! shared with the TURN server (the coturn REST convention, `use-auth-secret`): the
//! username is `<expiry unix time>:<bare JID>`, the password base64(HMAC-SHA-1(secret,
//! username)), so the TURN server checks them without asking anyone.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::config::ExternalService;
use crate::stanza::{build, StanzaError};

pub const NS: &str = "urn:xmpp:extdisco:2";

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        match (req.iq.attr("type"), req.payload.name()) {
            (Some("get"), "services") | (Some("get"), "credentials") => {
                let wanted = req.payload.attr("type");
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let user = req.user.to_bare().to_string();
                let services = req.core.cfg.external_services.iter().filter(|s| wanted.is_none_or(|t| t == s.type_)).map(|s| service(s, &user, now)).collect();
                IqAnswer::Result(Some(build(req.payload.name(), NS, &[], services)))
            }
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}

fn service(s: &ExternalService, user: &str, now: u64) -> Element {
    let port = s.port.to_string();
    let mut attrs = vec![("type", s.type_.as_str()), ("host", s.host.as_str()), ("port", port.as_str()), ("transport", s.transport.as_str())];
    let (username, password, expires);
    if !s.secret.is_empty() {
        let expiry = now + s.credentials_ttl_secs;
        username = format!("{expiry}:{user}");
        password = turn_password(&s.secret, &username);
        expires = humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(expiry)).to_string();
        attrs.extend([("username", username.as_str()), ("password", password.as_str()), ("expires", expires.as_str()), ("restricted", "1")]);
    }
    build("service", NS, &attrs, vec![])
}

/// coturn's `use-auth-secret`: base64(HMAC-SHA-1(secret, username)).
fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_passwords_follow_coturns_rest_convention() {
        // As Python's hmac and base64 compute it (what coturn computes in C).
        assert_eq!(turn_password("north", "1433895918:user"), "/gk4t5tUc08OpM3NjrVjHSFVNmY=");
    }
}
