//! XEP-0092 Software Version. The operating system is left out on purpose: it tells an
//! attacker more than it tells a user.

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::{build, StanzaError};
use crate::xml::ns;

pub fn handle(req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async move {
        if req.iq.attr("type") != Some("get") {
            return IqAnswer::Error(StanzaError::BadRequest);
        }
        let text = |name: &str, value: &str| {
            let mut el = Element::bare(name, ns::VERSION);
            el.append_text(value.to_owned());
            el
        };
        let query = build("query", ns::VERSION, &[], vec![text("name", "martlet"), text("version", env!("CARGO_PKG_VERSION"))]);
        IqAnswer::Result(Some(query))
    })
}
