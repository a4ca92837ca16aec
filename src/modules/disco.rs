//! XEP-0030 Service Discovery: the server's identity and features (taken from the module
//! table, so only what is served is listed), and the identities and features of a user's
//! bare JID (asked by its owner here, by anyone else through the account's UserChannel).

use minidom::Element;

use super::{account_features, caps, features, IqAnswer, IqFuture, IqRequest, ACCOUNT_IQS};
use crate::config::Config;
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

/// disco#info of an account, as its owner (`to_owner`) or anyone else sees it.
pub fn account_info(cfg: &Config, to_owner: bool) -> Element {
    let served = ACCOUNT_IQS.iter().filter(|a| to_owner || a.public).filter_map(|a| a.identity);
    let identities = [("account", "registered")].into_iter().chain(served);
    let mut children: Vec<Element> =
        identities.map(|(category, type_)| build("identity", ns::DISCO_INFO, &[("category", category), ("type", type_)], vec![])).collect();
    children.extend(account_features(cfg, to_owner).into_iter().map(feature));
    build("query", ns::DISCO_INFO, &[], children)
}

fn feature(var: &str) -> Element {
    build("feature", ns::DISCO_INFO, &[("var", var)], vec![])
}

pub fn info(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let to_account = req.iq.attr("to").is_some_and(|t| t.contains('@'));
        // XEP-0115 §6.2: our caps node answers as the server does; no other node exists.
        let node = req.payload.attr("node");
        let caps_node = format!("{}#{}", caps::NODE, caps::ver_of(&req.core.caps));
        if node.is_some_and(|n| to_account || n != caps_node) {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        if to_account {
            return IqAnswer::Result(Some(account_info(&req.core.cfg, true)));
        }
        let (category, type_, name) = caps::IDENTITY;
        let mut children = vec![build("identity", ns::DISCO_INFO, &[("category", category), ("type", type_), ("name", name)], vec![])];
        children.extend(features(&req.core.cfg).into_iter().map(feature));
        let attrs: Vec<(&str, &str)> = node.map(|n| ("node", n)).into_iter().collect();
        IqAnswer::Result(Some(build("query", ns::DISCO_INFO, &attrs, children)))
    })
}

/// The server's services (XEP-0030 §4.2): the XEP-0045 chat service and the XEP-0363
/// upload service, where they are served; clients find them here.
pub fn items(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.payload.attr("node").is_some() {
            return IqAnswer::Error(StanzaError::ItemNotFound);
        }
        let cfg = &req.core.cfg;
        let services = [cfg.muc_domain(), cfg.upload_domain()].into_iter().flatten();
        let items = services.map(|jid| build("item", ns::DISCO_ITEMS, &[("jid", jid)], vec![])).collect();
        IqAnswer::Result(Some(build("query", ns::DISCO_ITEMS, &[], items)))
    })
}
