//! XEP-0054 vcard-temp: an account's vCard, set by its owner and readable by anyone. The
//! owner's own requests are answered here; a request to another user's bare JID reaches
//! that user's UserChannel, which answers for the account with [`answer_for_account`].

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::storage::Storage;
use crate::stanza::StanzaError;
use crate::xml::ns;

const KEY: &str = "vcard";

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        let owner = req.user.to_bare().to_string();
        match req.iq.attr("type") {
            Some("get") => answer_for_account(&req.core.storage, owner).await,
            Some("set") if req.payload.name() == "vCard" => {
                match req.core.storage.doc_put(owner, KEY.into(), Some(crate::stanza::to_xml(req.payload))).await {
                    Ok(()) => IqAnswer::Result(None),
                    Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
                }
            }
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}

/// The stored vCard of `owner`, or an empty one (§3.1: an account without a vCard answers
/// with an empty element).
pub async fn answer_for_account(storage: &Storage, owner: String) -> IqAnswer {
    match storage.doc_get(owner, KEY.into()).await {
        Ok(stored) => {
            let card = stored.and_then(|xml| xml.parse::<Element>().ok()).unwrap_or_else(|| Element::bare("vCard", ns::VCARD));
            IqAnswer::Result(Some(card))
        }
        Err(_) => IqAnswer::Error(StanzaError::ServiceUnavailable),
    }
}
