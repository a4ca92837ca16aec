//! XEP-0313 message archive records, queries and per-user preferences, shared by both
//! backends. An archive id is `micros << 10 | 10 low bits` (see `router::archive_ids`), so
//! ids sort by time and a time range is an id range: backends only ever scan ids.

use serde::{Deserialize, Serialize};

/// One archived message, for one owner's archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRow {
    /// Whose archive (bare JID).
    pub owner: String,
    pub id: u64,
    /// The other party's bare JID.
    pub with: String,
    pub xml: String,
}

/// Which of an owner's messages a query wants (XEP-0313 §4.1, XEP-0059 RSM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    pub with: Option<String>,
    /// Only ids strictly after this one (RSM `<after/>`, and the form's `start`).
    pub after_id: Option<u64>,
    /// Only ids strictly before this one (RSM `<before/>`, and the form's `end`).
    pub before_id: Option<u64>,
    /// Page from the newest end (RSM `<before/>`): the last `max` that match.
    pub from_end: bool,
    pub max: usize,
}

/// A page of results, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePage {
    /// (id, other party, xml)
    pub items: Vec<(u64, String, String)>,
    /// Nothing else matches beyond the page, in the direction paged.
    pub complete: bool,
}

impl ArchivePage {
    /// Builds the page from up to `max + 1` matches read in paging order (oldest first, or
    /// newest first when `from_end`): the extra one only tells that more exist.
    pub fn from_scan(mut items: Vec<(u64, String, String)>, query: &ArchiveQuery) -> ArchivePage {
        let complete = items.len() <= query.max;
        items.truncate(query.max);
        if query.from_end {
            items.reverse();
        }
        ArchivePage { items, complete }
    }
}

/// XEP-0313 §6 `default`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultMode {
    #[default]
    Always,
    Never,
    Roster,
}

impl DefaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultMode::Always => "always",
            DefaultMode::Never => "never",
            DefaultMode::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<DefaultMode> {
        match s {
            "always" => Some(DefaultMode::Always),
            "never" => Some(DefaultMode::Never),
            "roster" => Some(DefaultMode::Roster),
            _ => None,
        }
    }
}

/// An owner's archiving preferences (XEP-0313 §6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MamPrefs {
    pub default: DefaultMode,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl MamPrefs {
    /// Whether a message with `with` goes into the archive; `in_roster` is asked only in
    /// roster mode.
    pub fn admits(&self, with: &str, in_roster: impl FnOnce() -> bool) -> bool {
        if self.never.iter().any(|j| j == with) {
            return false;
        }
        if self.always.iter().any(|j| j == with) {
            return true;
        }
        match self.default {
            DefaultMode::Always => true,
            DefaultMode::Never => false,
            DefaultMode::Roster => in_roster(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefs_lists_win_over_the_default() {
        let prefs = MamPrefs { default: DefaultMode::Roster, always: vec!["a@d".into()], never: vec!["n@d".into()] };
        assert!(prefs.admits("a@d", || false));
        assert!(!prefs.admits("n@d", || true));
        assert!(prefs.admits("r@d", || true));
        assert!(!prefs.admits("x@d", || false));
        assert!(MamPrefs::default().admits("x@d", || unreachable!()));
    }

    #[test]
    fn pages_from_either_end() {
        let rows = |ids: &[u64]| ids.iter().map(|&i| (i, "w".to_owned(), format!("<m{i}/>"))).collect::<Vec<_>>();
        let q = ArchiveQuery { max: 2, ..Default::default() };
        let page = ArchivePage::from_scan(rows(&[1, 2, 3]), &q);
        assert_eq!(page.items.iter().map(|i| i.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!page.complete);
        let q = ArchiveQuery { max: 2, from_end: true, ..Default::default() };
        let page = ArchivePage::from_scan(rows(&[9, 8]), &q);
        assert_eq!(page.items.iter().map(|i| i.0).collect::<Vec<_>>(), vec![8, 9]);
        assert!(page.complete);
    }
}
