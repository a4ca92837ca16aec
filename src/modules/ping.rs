//! XEP-0199 XMPP Ping, client to server. (Server to client pings live in the session's
//! idle timer.)

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::StanzaError;

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        match req.iq.attr("type") {
            Some("get") => IqAnswer::Result(None),
            _ => IqAnswer::Error(StanzaError::BadRequest),
        }
    })
}
