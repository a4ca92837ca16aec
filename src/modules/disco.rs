//! XEP-0030 Service Discovery: the server's identity and features (taken from the module
//! table, so only what is served is listed), and the account identity of a user's bare JID.

use super::{account_features, caps, features, IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

pub fn info(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let to_account = req.iq.attr("to").is_some_and(|t| t.contains('@'));
        // XEP-0115 §6.2: our caps node answers as the server does; no other node exists.
        let node = req.payload.attr("node");
        let caps_node = format!("{}#{}", caps::NODE, caps::ver_of(&req.core.caps));
        if node.is_some_and(|n| to_account || n != caps_node) {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        let identity = if to_account {
            build("identity", ns::DISCO_INFO, &[("category", "account"), ("type", "registered")], vec![])
        } else {
            let (category, type_, name) = caps::IDENTITY;
            build("identity", ns::DISCO_INFO, &[("category", category), ("type", type_), ("name", name)], vec![])
        };
        let mut children = vec![identity];
        let listed = if to_account { account_features(&req.core.cfg) } else { features(&req.core.cfg) };
        children.extend(listed.into_iter().map(|f| build("feature", ns::DISCO_INFO, &[("var", f)], vec![])));
        let attrs: Vec<(&str, &str)> = node.map(|n| ("node", n)).into_iter().collect();
        IqAnswer::Result(Some(build("query", ns::DISCO_INFO, &attrs, children)))
    })
}

/// No components or rooms yet: an empty list (XEP-0030 §4.2).
pub fn items(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.payload.attr("node").is_some() {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        IqAnswer::Result(Some(build("query", ns::DISCO_ITEMS, &[], vec![])))
    })
}
