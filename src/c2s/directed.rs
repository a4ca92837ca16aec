//! RFC 6121 §4.6: the entities a session sent directed presence to, remembered so they hear
//! `unavailable` when it ends (and, for XEP-0045, the rooms it is in).
//!
//! Most sessions never send one, and every idle session carries this inline: an empty set
//! is one pointer (8 B), not a hash table's 48.

use std::collections::HashSet;

use jid::Jid;

#[derive(Default)]
pub struct Directed(Option<Box<HashSet<Jid>>>);

impl Directed {
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    pub fn insert(&mut self, to: Jid) {
        self.0.get_or_insert_with(Default::default).insert(to);
    }

    pub fn remove(&mut self, to: &Jid) {
        if let Some(set) = &mut self.0 {
            set.remove(to);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Jid> {
        self.0.iter().flat_map(|set| set.iter())
    }

    /// Empties the set, giving back its table.
    pub fn take(&mut self) -> impl Iterator<Item = Jid> {
        self.0.take().into_iter().flat_map(|set| set.into_iter())
    }
}

impl FromIterator<Jid> for Directed {
    fn from_iter<I: IntoIterator<Item = Jid>>(iter: I) -> Self {
        let set: HashSet<Jid> = iter.into_iter().collect();
        Directed((!set.is_empty()).then(|| Box::new(set)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_nothing_until_the_first_and_gives_it_back_when_taken() {
        let mut directed = Directed::default();
        assert!(directed.0.is_none());
        let room = Jid::new("room@conference.localhost/nick").unwrap();
        directed.insert(room.clone());
        directed.insert(room.clone());
        assert_eq!(directed.len(), 1);
        assert_eq!(directed.iter().collect::<Vec<_>>(), vec![&room]);
        assert_eq!(directed.take().collect::<Vec<_>>(), vec![room]);
        assert!(directed.0.is_none());
        assert_eq!(std::mem::size_of::<Directed>(), 8);
    }
}
