//! XEP-0313 Message Archive Management for users, with XEP-0359 stanza ids and XEP-0059
//! result set paging.
//!
//! Archiving happens at the recipient's owner: the UserChannel that delivers a chat stamps
//! it with a `<stanza-id/>` and queues one row for the recipient's archive and one for the
//! sender's, which the storage's archive writer commits in batches (the message path never
//! waits for the disk). Ids come from the core's [`ArchiveIds`], so no storage round trip
//! is needed to name a message. Each owner's preferences (§6) are applied as the rows are
//! written. Queries and preferences are IQs to the user's own account, answered here.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::router::CoreState;
use crate::stanza::{build, text_el, to_xml, Stanza, StanzaError};
use crate::storage::{ArchivePage, ArchiveQuery, DefaultMode, MamPrefs};
use crate::xml::ns;

/// Results per page when the client names no `<max/>`.
const PAGE_MESSAGES_DEFAULT: usize = 50;

/// Archive ids of one core: `micros << 10 | core (4 bits) << 6 | random (6 bits)`. They sort
/// by time (a time range is an id range), never repeat on a core (the micros part moves on
/// at least by one per id), and two cores or nodes collide only by issuing the same micros
/// for the same owner with equal low bits.
pub struct ArchiveIds {
    core_bits: u64,
    last_micros: Cell<u64>,
}

impl ArchiveIds {
    pub fn new(core: usize) -> ArchiveIds {
        ArchiveIds { core_bits: ((core as u64) & 0xF) << 6, last_micros: Cell::new(0) }
    }

    pub fn next(&self) -> u64 {
        let now = micros_of(SystemTime::now());
        let micros = now.max(self.last_micros.get() + 1);
        self.last_micros.set(micros);
        micros << 10 | self.core_bits | rand::random::<u64>() & 0x3F
    }
}

fn micros_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The first id of `micros`, for time bounds (clamped: a date past the year 2262 is the end
/// of the id space, not a wrapped-around one).
fn id_floor(micros: u64) -> u64 {
    micros.min(u64::MAX >> 10) << 10
}

fn stamp_of(id: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(id >> 10);
    humantime::format_rfc3339_micros(t).to_string()
}

/// The message as delivered to and archived for `owner`: a `<stanza-id/>` by `owner` added
/// (XEP-0359 §3), and any the sender put in claiming to be by `owner` taken out first.
pub fn stamp(stanza: &Stanza, id: u64, owner: &str) -> Stanza {
    let id_el = build("stanza-id", ns::SID, &[("id", &id.to_string()), ("by", owner)], vec![]);
    // Sealed stanzas with content end with their closing tag: a text splice there spares a
    // parse on the path every chat takes. Anything else (a client's own stanza-ids to take
    // out, an empty element) goes through the element.
    let splice_at = stanza.xml.rfind("</").filter(|_| !stanza.xml.contains(ns::SID));
    let xml = if let Some(end) = splice_at {
        format!("{}{}{}", &stanza.xml[..end], to_xml(&id_el), &stanza.xml[end..])
    } else {
        let mut el = stanza.element();
        // remove_child takes the first match only: take every stanza-id out, put back those
        // by others.
        let others: Vec<Element> =
            el.children().filter(|c| c.is("stanza-id", ns::SID) && c.attr("by") != Some(owner)).cloned().collect();
        while el.remove_child("stanza-id", ns::SID).is_some() {}
        others.into_iter().for_each(|c| {
            el.append_child(c);
        });
        el.append_child(id_el);
        to_xml(&el)
    };
    Stanza { xml: xml.into(), ..stanza.clone() }
}

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let owner = req.user.to_bare().to_string();
        match (req.iq.attr("type"), req.payload.name()) {
            (Some("get"), "query") => IqAnswer::Result(Some(query_form())),
            (Some("set"), "query") => query(req.core, owner, req.payload, &req.user.to_string()).await,
            (Some("get"), "prefs") => match req.core.storage.mam_prefs(owner).await {
                Ok(p) => IqAnswer::Result(Some(prefs_el(&p))),
                Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
            },
            (Some("set"), "prefs") => {
                let Some(prefs) = parse_prefs(req.payload) else { return IqAnswer::Error(StanzaError::BadRequest) };
                match req.core.storage.set_mam_prefs(owner, prefs.clone()).await {
                    Ok(()) => IqAnswer::Result(Some(prefs_el(&prefs))),
                    Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
                }
            }
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}

/// The `<query/>` `payload` on the archive of `owner` (a user, or a XEP-0045 room), for `to`:
/// its result messages (§4.2), then the `<fin/>`.
pub async fn query(core: &Rc<CoreState>, owner: String, payload: &Element, to: &str) -> IqAnswer {
    let page_max = core.cfg.limits.mam_page_messages_max;
    let q = match parse_query(payload, page_max) {
        Ok(q) => q,
        Err(e) => return IqAnswer::Error(e),
    };
    let page = match core.storage.archive_query(owner, q).await {
        Ok(p) => p,
        Err(_) => return IqAnswer::Error(StanzaError::ServiceUnavailable),
    };
    let queryid = payload.attr("queryid");
    let results = page.items.iter().map(|(id, _, xml)| result_message(to, queryid, *id, xml)).collect();
    IqAnswer::ResultAfter(results, Some(fin(&page)))
}

/// The query form (§4.1.1), for a `get` of the query.
pub fn query_form() -> Element {
    build("query", ns::MAM, &[], vec![form()])
}

/// One result (§4.2): the archived message forwarded (XEP-0297) with its time.
fn result_message(to: &str, queryid: Option<&str>, id: u64, xml: &str) -> Element {
    let original: Element = xml.parse().unwrap_or_else(|_| Element::bare("message", ns::CLIENT));
    let delay = build("delay", ns::DELAY, &[("stamp", &stamp_of(id))], vec![]);
    let forwarded = build("forwarded", ns::FORWARD, &[], vec![delay, original]);
    let id_text = id.to_string();
    let mut attrs = vec![("id", id_text.as_str())];
    attrs.extend(queryid.map(|q| ("queryid", q)));
    build("message", ns::CLIENT, &[("to", to)], vec![build("result", ns::MAM, &attrs, vec![forwarded])])
}

fn fin(page: &ArchivePage) -> Element {
    let mut set = Vec::new();
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.push(text_el("first", ns::RSM, &first.0.to_string()));
        set.push(text_el("last", ns::RSM, &last.0.to_string()));
    }
    let complete = if page.complete { "true" } else { "false" };
    build("fin", ns::MAM, &[("complete", complete)], vec![build("set", ns::RSM, &[], set)])
}

/// The elements of XEP-0059 result set management, and its `<set/>` itself.
const RSM_ELEMENTS: &[&str] = &["set", "max", "before", "after", "index", "first", "last", "count"];

/// The query's form (§4.1.1) and RSM set; ids that are not ours are item-not-found (§4.3.4).
fn parse_query(query: &Element, page_max: usize) -> Result<ArchiveQuery, StanzaError> {
    // XEP-0059 §2: paging is asked for inside `<set xmlns=RSM>`. A `<max/>` or `<before/>`
    // elsewhere would be ignored, and the client served page one again and again.
    if query.children().any(|c| RSM_ELEMENTS.contains(&c.name()) && !c.is("set", ns::RSM)) {
        return Err(StanzaError::BadRequest);
    }
    let mut q = ArchiveQuery { max: PAGE_MESSAGES_DEFAULT.min(page_max), ..Default::default() };
    if let Some(form) = query.get_child("x", ns::DATA_FORMS) {
        for field in form.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
            let value = field.get_child("value", ns::DATA_FORMS).map(|v| v.text()).unwrap_or_default();
            match field.attr("var") {
                Some("with") => q.with = Some(jid::BareJid::new(&value).map_err(|_| StanzaError::JidMalformed)?.to_string()),
                Some("start") => q.after_id = Some(id_floor(parse_time(&value)?).saturating_sub(1)),
                Some("end") => q.before_id = Some(id_floor(parse_time(&value)? + 1)),
                Some("FORM_TYPE") if value != ns::MAM => return Err(StanzaError::BadRequest),
                Some("FORM_TYPE") => {}
                _ => return Err(StanzaError::FeatureNotImplemented),
            }
        }
    }
    if let Some(set) = query.get_child("set", ns::RSM) {
        if let Some(max) = set.get_child("max", ns::RSM) {
            q.max = max.text().trim().parse::<usize>().map_err(|_| StanzaError::BadRequest)?.min(page_max);
        }
        if let Some(after) = set.get_child("after", ns::RSM) {
            let id = parse_id(&after.text())?;
            q.after_id = Some(q.after_id.map_or(id, |a| a.max(id)));
        }
        if let Some(before) = set.get_child("before", ns::RSM) {
            q.from_end = true;
            let text = before.text();
            if !text.trim().is_empty() {
                let id = parse_id(&text)?;
                q.before_id = Some(q.before_id.map_or(id, |b| b.min(id)));
            }
        }
    }
    Ok(q)
}

fn parse_id(text: &str) -> Result<u64, StanzaError> {
    text.trim().parse().map_err(|_| StanzaError::ItemNotFound)
}

/// XEP-0082 date-time, to micros since the epoch.
fn parse_time(text: &str) -> Result<u64, StanzaError> {
    humantime::parse_rfc3339_weak(text.trim()).map(micros_of).map_err(|_| StanzaError::BadRequest)
}

fn form() -> Element {
    let field = |var: &str, type_: &str, value: Option<&str>| {
        let children = value.map(|v| vec![text_el("value", ns::DATA_FORMS, v)]).unwrap_or_default();
        build("field", ns::DATA_FORMS, &[("var", var), ("type", type_)], children)
    };
    build(
        "x",
        ns::DATA_FORMS,
        &[("type", "form")],
        vec![
            field("FORM_TYPE", "hidden", Some(ns::MAM)),
            field("with", "jid-single", None),
            field("start", "text-single", None),
            field("end", "text-single", None),
        ],
    )
}

fn parse_prefs(el: &Element) -> Option<MamPrefs> {
    let default = DefaultMode::parse(el.attr("default")?)?;
    let jids = |name: &str| -> Option<Vec<String>> {
        el.get_child(name, ns::MAM).map_or(Some(Vec::new()), |list| {
            list.children().map(|j| jid::BareJid::new(&j.text()).ok().map(|b| b.to_string())).collect()
        })
    };
    Some(MamPrefs { default, always: jids("always")?, never: jids("never")? })
}

fn prefs_el(p: &MamPrefs) -> Element {
    let list = |name: &str, jids: &[String]| build(name, ns::MAM, &[], jids.iter().map(|j| text_el("jid", ns::MAM, j)).collect());
    build("prefs", ns::MAM, &[("default", p.default.as_str())], vec![list("always", &p.always), list("never", &p.never)])
}


#[cfg(test)]
mod tests {
    use super::*;
    use jid::Jid;

    fn chat(inner: &str) -> Stanza {
        let el: Element = format!("<message xmlns='jabber:client' type='chat'>{inner}</message>").parse().unwrap();
        Stanza::seal(crate::stanza::Kind::Message, el, Jid::new("b@d/r").unwrap(), Jid::new("a@d").unwrap())
    }

    #[test]
    fn ids_grow_and_carry_time() {
        let ids = ArchiveIds::new(3);
        let (a, b) = (ids.next(), ids.next());
        assert!(b > a);
        assert_eq!(a >> 6 & 0xF, 3);
        assert!(stamp_of(a).starts_with("20"), "{}", stamp_of(a));
    }

    #[test]
    fn stamping_adds_ours_and_drops_forged_ones() {
        let s = stamp(&chat("<body>x</body>"), 42, "a@d");
        assert!(s.xml.ends_with("<stanza-id xmlns='urn:xmpp:sid:0' by='a@d' id='42'/></message>"), "{}", s.xml);
        let forged = chat("<body>x</body><stanza-id xmlns='urn:xmpp:sid:0' by='room@x' id='r'/><stanza-id xmlns='urn:xmpp:sid:0' by='a@d' id='1'/>");
        let s = stamp(&forged, 42, "a@d");
        assert_eq!(s.xml.matches("urn:xmpp:sid:0").count(), 2, "{}", s.xml);
        assert!(s.xml.contains("by='room@x'") && s.xml.contains("id='42'") && !s.xml.contains("id='1'"), "{}", s.xml);
    }

    #[test]
    fn queries_parse_form_and_rsm() {
        let q: Element = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
            <field var='with'><value>b@d</value></field></x>\
            <set xmlns='http://jabber.org/protocol/rsm'><max>500</max><before/></set></query>"
            .parse()
            .unwrap();
        let parsed = parse_query(&q, 100).unwrap();
        assert_eq!(parsed, ArchiveQuery { with: Some("b@d".into()), max: 100, from_end: true, ..Default::default() });
        let bad: Element = "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>zz</after></set></query>"
            .parse()
            .unwrap();
        assert_eq!(parse_query(&bad, 100), Err(StanzaError::ItemNotFound));
    }

    #[test]
    fn rsm_outside_its_set_is_refused() {
        for inner in [
            "<max>5</max>",
            "<before/>",
            "<after xmlns='http://jabber.org/protocol/rsm'>1</after>",
            "<set><max>5</max></set>",
        ] {
            let q: Element = format!("<query xmlns='urn:xmpp:mam:2'>{inner}</query>").parse().unwrap();
            assert_eq!(parse_query(&q, 100), Err(StanzaError::BadRequest), "{inner}");
        }
    }
}
