//! XEP-0030 Service Discovery: the server's identity and features (taken from the module
//! table, so only what is served is listed), and the account identity of a user's bare JID.

use super::{account_features, features, IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

pub fn info(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.payload.attr("node").is_some() {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        let to_account = req.iq.attr("to").is_some_and(|t| t.contains('@'));
        let identity = if to_account {
            build("identity", ns::DISCO_INFO, &[("category", "account"), ("type", "registered")], vec![])
        } else {
            build("identity", ns::DISCO_INFO, &[("category", "server"), ("type", "im"), ("name", "martlet")], vec![])
        };
        let mut children = vec![identity];
        let listed = if to_account { account_features(&req.core.cfg) } else { features(&req.core.cfg) };
        children.extend(listed.into_iter().map(|f| build("feature", ns::DISCO_INFO, &[("var", f)], vec![])));
        IqAnswer::Result(Some(build("query", ns::DISCO_INFO, &[], children)))
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
