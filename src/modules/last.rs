//! XEP-0012 Last Activity: the server's uptime at its domain (§5), and for an account's
//! bare JID the seconds since its user last logged out with the status of that last
//! unavailable presence (§3), answered by the user's UserChannel
//! (`router/user_channel/last.rs`), which records each logout in the user's documents so
//! the answer survives restarts. An IQ to a full JID goes to that client (§4).

use std::time::{SystemTime, UNIX_EPOCH};

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

/// The user document holding the last logout.
pub const KEY: &str = "last-activity";

/// §5: to the domain, how long the server has been up. Each core counts from its own start,
/// a few milliseconds apart.
pub fn server_uptime(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.iq.attr("type") != Some("get") {
            return IqAnswer::Error(StanzaError::BadRequest);
        }
        IqAnswer::Result(Some(query(req.core.started.elapsed().as_secs(), "")))
    })
}

/// `<query xmlns='jabber:iq:last' seconds=…>status</query>`.
pub fn query(seconds: u64, status: &str) -> Element {
    let mut q = build("query", ns::LAST, &[("seconds", &seconds.to_string())], vec![]);
    if !status.is_empty() {
        q.append_text(status.to_owned());
    }
    q
}

/// A logout as stored: when (seconds since the epoch) and the status it left.
#[derive(Debug, PartialEq, Eq)]
pub struct Logout {
    pub at_secs: u64,
    pub status: String,
}

impl Logout {
    /// A logout now, leaving `presence`'s status text (the first `<status/>`), if any.
    pub fn now(presence: Option<&Element>) -> Logout {
        let status = presence.and_then(|p| p.get_child("status", ns::CLIENT)).map(|s| s.text()).unwrap_or_default();
        Logout { at_secs: unix_secs(SystemTime::now()), status }
    }

    pub fn stored(&self) -> String {
        format!("{}\n{}", self.at_secs, self.status)
    }

    /// `None` for a document this code did not write.
    pub fn parse(stored: &str) -> Option<Logout> {
        let (at, status) = stored.split_once('\n')?;
        Some(Logout { at_secs: at.parse().ok()?, status: status.to_owned() })
    }

    /// The §3 answer at `now`: at least 1, since 0 says the user is online (§3), and
    /// clients (profanity) show "currently logged in" for a logout in the same second.
    pub fn answer(&self, now: SystemTime) -> Element {
        query(unix_secs(now).saturating_sub(self.at_secs).max(1), &self.status)
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_logout_round_trips_and_ages() {
        let p: Element = "<presence xmlns='jabber:client' type='unavailable'><status>Heading\nHome</status></presence>".parse().unwrap();
        let l = Logout::now(Some(&p));
        assert_eq!(l.status, "Heading\nHome");
        let back = Logout::parse(&l.stored()).unwrap();
        assert_eq!(back, l);
        let later = UNIX_EPOCH + Duration::from_secs(l.at_secs + 903);
        let xml = crate::stanza::to_xml(&back.answer(later));
        assert_eq!(xml, "<query xmlns='jabber:iq:last' seconds='903'>Heading\nHome</query>");
        assert_eq!(Logout::now(None).status, "");
        assert_eq!(Logout::parse("garbage"), None);
        assert_eq!(Logout::parse("x\ny"), None);
    }

    #[test]
    fn a_logout_just_now_or_a_clock_set_back_answers_one() {
        let l = Logout { at_secs: u64::MAX, status: String::new() };
        assert_eq!(crate::stanza::to_xml(&l.answer(SystemTime::now())), "<query xmlns='jabber:iq:last' seconds='1'/>");
        let now = Logout::now(None);
        assert!(crate::stanza::to_xml(&now.answer(SystemTime::now())).contains("seconds='1'"));
    }
}
