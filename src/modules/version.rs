//! XEP-0092 Software Version. The operating system is left out on purpose: it tells an
//! attacker more than it tells a user.


use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, text_el, StanzaError};
use crate::xml::ns;

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.iq.attr("type") != Some("get") {
            return IqAnswer::Error(StanzaError::BadRequest);
        }
        let fields = vec![text_el("name", ns::VERSION, "martlet"), text_el("version", ns::VERSION, env!("CARGO_PKG_VERSION"))];
        let query = build("query", ns::VERSION, &[], fields);
        IqAnswer::Result(Some(query))
    })
}
