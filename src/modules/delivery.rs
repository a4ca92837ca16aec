//! RFC 6121 §8.5: where a message or presence addressed to a local user goes, given the
//! user's connected resources. Pure functions over a snapshot, so the rules are unit-tested.

/// One connected resource as the rules see it.
#[derive(Clone, Debug)]
pub struct ResourceView<'a> {
    pub name: &'a str,
    pub available: bool,
    pub priority: i8,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Deliver to these resources (indexes into the slice given).
    Resources(Vec<usize>),
    /// Store for later (XEP-0160).
    Offline,
    /// Answer the sender with `<service-unavailable/>`.
    Bounce,
    /// Silently drop.
    Drop,
}

/// §8.5.2 (bare JID) and §8.5.3 (full JID) for messages of `type_` ("" = normal).
pub fn message(resources: &[ResourceView], to_resource: Option<&str>, type_: &str) -> Route {
    if let Some(res) = to_resource {
        // §8.5.3.1: a connected resource gets it whatever its presence.
        if let Some(i) = resources.iter().position(|r| r.name == res) {
            return Route::Resources(vec![i]);
        }
        // §8.5.3.2.1: no such resource.
        return match type_ {
            "" | "normal" | "chat" => message(resources, None, type_),
            "groupchat" => Route::Bounce,
            _ => Route::Drop, // headline, error
        };
    }
    match type_ {
        "" | "normal" | "chat" => {
            // §8.5.2.1.1: the most available resources (highest non-negative priority); all
            // of them on a tie, as ejabberd and Prosody do.
            let best = resources.iter().filter(|r| r.available && r.priority >= 0).map(|r| r.priority).max();
            match best {
                Some(p) => Route::Resources(indexes(resources, |r| r.available && r.priority == p)),
                None => Route::Offline,
            }
        }
        "headline" => {
            let all = indexes(resources, |r| r.available && r.priority >= 0);
            if all.is_empty() {
                Route::Drop
            } else {
                Route::Resources(all)
            }
        }
        "groupchat" => Route::Bounce,
        _ => Route::Drop, // error, or a type RFC 6121 does not define
    }
}

/// Presence to a bare JID goes to every available resource (§8.5.2.1.2); to a full JID, to
/// that resource if connected, else nowhere (§8.5.3.2.2: presence is not stored).
pub fn presence(resources: &[ResourceView], to_resource: Option<&str>) -> Vec<usize> {
    match to_resource {
        Some(res) => indexes(resources, |r| r.name == res),
        None => indexes(resources, |r| r.available),
    }
}

fn indexes(resources: &[ResourceView], keep: impl Fn(&ResourceView) -> bool) -> Vec<usize> {
    resources.iter().enumerate().filter(|(_, r)| keep(r)).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(spec: &[(&'static str, bool, i8)]) -> Vec<ResourceView<'static>> {
        spec.iter().map(|&(name, available, priority)| ResourceView { name, available, priority }).collect()
    }

    #[test]
    fn chat_to_bare_goes_to_all_highest_priority() {
        let r = res(&[("a", true, 5), ("b", true, 5), ("c", true, 1), ("d", false, 9)]);
        assert_eq!(message(&r, None, "chat"), Route::Resources(vec![0, 1]));
    }

    #[test]
    fn negative_priority_or_unavailable_means_offline() {
        let r = res(&[("a", true, -1), ("b", false, 3)]);
        assert_eq!(message(&r, None, "chat"), Route::Offline);
        assert_eq!(message(&[], None, ""), Route::Offline);
    }

    #[test]
    fn full_jid_rules() {
        let r = res(&[("a", false, 0), ("b", true, 0)]);
        assert_eq!(message(&r, Some("a"), "chat"), Route::Resources(vec![0]));
        assert_eq!(message(&r, Some("zz"), "chat"), Route::Resources(vec![1]));
        assert_eq!(message(&r, Some("zz"), "headline"), Route::Drop);
        assert_eq!(message(&r, Some("zz"), "groupchat"), Route::Bounce);
    }

    #[test]
    fn headline_and_groupchat_to_bare() {
        let r = res(&[("a", true, 0), ("b", true, 3)]);
        assert_eq!(message(&r, None, "headline"), Route::Resources(vec![0, 1]));
        assert_eq!(message(&r, None, "groupchat"), Route::Bounce);
        assert_eq!(message(&r, None, "error"), Route::Drop);
    }

    #[test]
    fn presence_targets() {
        let r = res(&[("a", true, 0), ("b", false, 0)]);
        assert_eq!(presence(&r, None), vec![0]);
        assert_eq!(presence(&r, Some("b")), vec![1]);
        assert_eq!(presence(&r, Some("x")), Vec::<usize>::new());
    }
}
