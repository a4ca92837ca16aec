//! XEP-0049 Private XML Storage: a client keeps XML of its own under a namespace of its
//! choosing, readable only by the same account. Each namespace is one stored document.

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

fn key(namespace: &str) -> String {
    format!("private:{namespace}")
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
            Some("set") => match storage.doc_put(owner, key(&item.ns()), Some(crate::stanza::to_xml(item))).await {
                Ok(()) => IqAnswer::Result(None),
                Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
            },
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}
