//! XEP-0049 Private XML Storage: a client keeps XML of its own under a namespace of its
//! choosing, readable only by the same account. Each namespace is one stored document, and
//! an account keeps at most `limits.private_xml_docs_max` of them (each one stanza, so
//! within `stanza_bytes_max`).

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::storage::Storage;
use crate::xml::ns;

/// What every private document's key starts with, so the store can count them.
const KEY_PREFIX: &str = "private:";

fn key(namespace: &str) -> String {
    format!("{KEY_PREFIX}{namespace}")
}

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        // §3: exactly one child, in a namespace of the client's own.
        let mut children = req.payload.children();
        let (Some(item), None) = (children.next(), children.next()) else {
            return IqAnswer::Error(StanzaError::BadRequest);
        };
        if [ns::CLIENT, ns::PRIVATE, ""].contains(&item.ns().as_str()) {
            return IqAnswer::Error(StanzaError::NotAcceptable);
        }
        let owner = req.user.to_bare().to_string();
        let storage = &req.core.storage;
        match req.iq.attr("type") {
            Some("get") => match storage.doc_get(owner, key(&item.ns())).await {
                Ok(stored) => {
                    let stored = stored.and_then(|xml| xml.parse::<Element>().ok()).unwrap_or_else(|| item.clone());
                    IqAnswer::Result(Some(build("query", ns::PRIVATE, &[], vec![stored])))
                }
                Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
            },
            Some("set") => set(storage, owner, item, req.core.cfg.limits.private_xml_docs_max).await,
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}

/// Stores `item` as its namespace's document. A new namespace past the cap is refused with
/// `<resource-constraint/>` (RFC 6120 §8.3.3.18, type wait), as PEP nodes and blocklist
/// items past theirs are: the request is acceptable as it stands, the account lacks room
/// (`<not-acceptable/>`, type modify, would tell the client to change the XML). Replacing a
/// stored namespace always works, and so does emptying one, which makes room.
async fn set(storage: &Storage, owner: String, item: &Element, max: usize) -> IqAnswer {
    let key = key(&item.ns());
    if is_empty(item) {
        // An empty element reads back the same as no document (a get of a namespace never
        // stored answers with the element asked for), so keeping none is keeping it.
        return match storage.doc_put(owner, key, None).await {
            Ok(()) => IqAnswer::Result(None),
            Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
        };
    }
    match storage.doc_put_capped(owner, key, crate::stanza::to_xml(item), KEY_PREFIX, max).await {
        Ok(true) => IqAnswer::Result(None),
        Ok(false) => IqAnswer::Error(StanzaError::ResourceConstraint),
        Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
    }
}

/// No attributes, children or text: what a get asks with.
fn is_empty(item: &Element) -> bool {
    item.attrs().is_empty() && item.children().next().is_none() && item.text().trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bare_element_is_empty() {
        let el = |xml: &str| xml.parse::<Element>().unwrap();
        assert!(is_empty(&el("<storage xmlns='storage:bookmarks'/>")));
        assert!(is_empty(&el("<p:storage xmlns:p='storage:bookmarks'> </p:storage>")));
        assert!(!is_empty(&el("<storage xmlns='storage:bookmarks' v='1'/>")));
        assert!(!is_empty(&el("<storage xmlns='storage:bookmarks'>x</storage>")));
        assert!(!is_empty(&el("<storage xmlns='storage:bookmarks'><conference/></storage>")));
    }
}
