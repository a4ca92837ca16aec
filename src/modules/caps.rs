//! XEP-0115 Entity Capabilities of the server itself: a `<c/>` in the stream features whose
//! `ver` hashes the server's disco#info, so a client that has seen this version before
//! knows the features without asking (one round trip less on every mobile reconnect).
//! disco#info on `NODE#ver` answers with the same identity and features. Hashing and the
//! verification string are xmpp-parsers' (XEP-0115 §5), not ours.

use minidom::Element;
use xmpp_parsers::caps::{compute_disco, hash_caps, Caps};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::hashes::Algo;

use crate::config::Config;

/// The `node` of our caps: who makes this software (XEP-0115 §4).
pub const NODE: &str = "https://martlet.example/caps";

/// The server's identity, as disco#info and the caps hash both state it.
pub const IDENTITY: (&str, &str, &str) = ("server", "im", "martlet");

/// The `<c/>` stream feature for the features `cfg` enables.
pub fn stream_feature(cfg: &Config) -> Element {
    let (category, type_, name) = IDENTITY;
    let disco = DiscoInfoResult {
        node: None,
        identities: vec![Identity { category: category.into(), type_: type_.into(), lang: None, name: Some(name.into()) }],
        features: super::features(cfg).into_iter().map(str::to_owned).collect(),
        extensions: vec![],
    };
    let hash = hash_caps(&compute_disco(&disco), Algo::Sha_1).expect("SHA-1 is supported");
    Element::from(Caps::new(NODE, hash))
}

/// The `ver` in `feature`, for matching `NODE#ver` in disco requests.
pub fn ver_of(feature: &Element) -> &str {
    feature.attr("ver").unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feature_names_node_and_a_sha1_ver() {
        let c = stream_feature(&Config::default());
        assert_eq!(c.attr("node"), Some(NODE));
        assert_eq!(c.attr("hash"), Some("sha-1"));
        // SHA-1 is 20 bytes: 28 base64 characters.
        assert_eq!(ver_of(&c).len(), 28, "{:?}", c.attr("ver"));
        let mut cfg = Config::default();
        cfg.archive.enabled = false;
        assert_ne!(ver_of(&stream_feature(&cfg)), ver_of(&c), "another feature set, another version");
    }
}
