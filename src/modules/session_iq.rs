//! The legacy session IQ of RFC 3921 §3: answered with an empty result, because old clients
//! and load tools (Tsung among them) still send it. Advertised as optional (RFC 6121
//! appendix E), so modern clients skip it.

use minidom::Element;

use super::{IqAnswer, IqFuture, IqRequest};
use crate::stanza::build;
use crate::xml::ns;

pub fn handle(_req: IqRequest<'_>) -> IqFuture<'_> {
    Box::pin(async { IqAnswer::Result(None) })
}

pub fn stream_feature() -> Element {
    build("session", ns::SESSION, &[], vec![Element::bare("optional", ns::SESSION)])
}
