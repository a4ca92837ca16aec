//! XEP-0084 User Avatar, on PEP: the image goes to `urn:xmpp:avatar:data` under the SHA-1
//! of its bytes, its description to `urn:xmpp:avatar:metadata`, whose notification tells
//! contacts to fetch the image. The service checks what is published to those two nodes
//! (with xmpp-parsers' types), so a contact never gets a metadata event it cannot read or
//! an image whose id does not name it. Size is bounded by `pep_item_bytes_max`, like any item.

use minidom::Element;
use sha1::{Digest, Sha1};
use xmpp_parsers::avatar::{Data, Metadata};

use crate::stanza::StanzaError;
use crate::xml::ns;

/// Refuses a malformed avatar item with `<invalid-payload/>` (XEP-0060 §7.1.3.5); items
/// for other nodes pass.
pub fn check(node: &str, id: Option<&str>, payload: &Element) -> Result<(), StanzaError> {
    let valid = match node {
        // §4.2: the item id is the SHA-1 of the image, in hex.
        ns::AVATAR_DATA => Data::try_from(payload.clone()).is_ok_and(|d| id.is_some_and(|id| id.eq_ignore_ascii_case(&sha1_hex(&d.data)))),
        // §4.3: <metadata/> of <info/>s (none: the avatar is switched off); the optional
        // <pointer/>s are for other protocols and not checked.
        ns::AVATAR_METADATA => {
            let mut infos = payload.clone();
            while infos.remove_child("pointer", ns::AVATAR_METADATA).is_some() {}
            Metadata::try_from(infos).is_ok()
        }
        _ => true,
    };
    if valid {
        Ok(())
    } else {
        Err(StanzaError::InvalidPayload)
    }
}

fn sha1_hex(data: &[u8]) -> String {
    Sha1::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn image_ids_must_be_the_sha1_of_the_image() {
        // "abc": SHA-1 a9993e36..., base64 YWJj.
        let data = el("<data xmlns='urn:xmpp:avatar:data'>YWJj</data>");
        assert_eq!(check(ns::AVATAR_DATA, Some("a9993e364706816aba3e25717850c26c9cd0d89d"), &data), Ok(()));
        assert_eq!(check(ns::AVATAR_DATA, Some("0000"), &data), Err(StanzaError::InvalidPayload));
        assert_eq!(check(ns::AVATAR_DATA, None, &data), Err(StanzaError::InvalidPayload));
        let not_base64 = el("<data xmlns='urn:xmpp:avatar:data'>!!</data>");
        assert_eq!(check(ns::AVATAR_DATA, Some("a9993e364706816aba3e25717850c26c9cd0d89d"), &not_base64), Err(StanzaError::InvalidPayload));
    }

    #[test]
    fn metadata_must_read_as_metadata() {
        let ok = el("<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='3' id='a9993e364706816aba3e25717850c26c9cd0d89d' type='image/png'/><pointer/></metadata>");
        assert_eq!(check(ns::AVATAR_METADATA, Some("x"), &ok), Ok(()));
        assert_eq!(check(ns::AVATAR_METADATA, None, &el("<metadata xmlns='urn:xmpp:avatar:metadata'/>")), Ok(()));
        let no_bytes = el("<metadata xmlns='urn:xmpp:avatar:metadata'><info id='a9993e364706816aba3e25717850c26c9cd0d89d' type='image/png'/></metadata>");
        assert_eq!(check(ns::AVATAR_METADATA, None, &no_bytes), Err(StanzaError::InvalidPayload));
        assert_eq!(check(ns::AVATAR_METADATA, None, &el("<x xmlns='y'/>")), Err(StanzaError::InvalidPayload));
        assert_eq!(check("urn:other", None, &el("<x xmlns='y'/>")), Ok(()));
    }
}
