//! Tests of `Storage`: the contract tests run on each backend (`embedded::*` in a temp dir,
//! `postgres::*` in a fresh database each, given `MARTLET_TEST_POSTGRES_URL` of a role that
//! may create databases; `scripts/test.sh` starts one and runs them), then backend-specific
//! ones.

use futures_lite::future::block_on;

use super::*;
use crate::config::Backend;

/// Few PBKDF2 rounds: the tests check plumbing, not key stretching.
const TEST_ITERATIONS: u32 = 16;

/// Where one test's data lives; `open` again reopens the same data.
trait Place {
    fn config(&self) -> StorageConfig;
    fn open(&self) -> Storage {
        Storage::open(&self.config()).unwrap()
    }
}

struct Embedded(tempfile::TempDir);

impl Embedded {
    fn new() -> Embedded {
        Embedded(tempfile::tempdir().unwrap())
    }
}

impl Place for Embedded {
    fn config(&self) -> StorageConfig {
        StorageConfig {
            path: self.0.path().join("data"),
            scram_iterations: TEST_ITERATIONS,
            ..StorageConfig::default()
        }
    }
}

/// A database of its own, dropped afterwards.
struct PostgresDb {
    server_url: String,
    name: String,
}

const POSTGRES_URL_VAR: &str = "MARTLET_TEST_POSTGRES_URL";

impl PostgresDb {
    fn new() -> PostgresDb {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server_url = std::env::var(POSTGRES_URL_VAR)
            .unwrap_or_else(|_| panic!("{POSTGRES_URL_VAR} is not set (scripts/postgres-scratch.sh start prints one)"));
        let name = format!("martlet_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let db = PostgresDb { server_url, name };
        db.admin(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn admin(&self, sql: &str) {
        let mut client = ::postgres::Client::connect(&self.server_url, ::postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
    }

    fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.config().postgres_url, ::postgres::NoTls).unwrap()
    }
}

impl Place for PostgresDb {
    fn config(&self) -> StorageConfig {
        let (server, _db) = self.server_url.rsplit_once('/').expect("a postgresql://.../DB URL");
        StorageConfig {
            backend: Backend::Postgres,
            postgres_url: format!("{server}/{}", self.name),
            scram_iterations: TEST_ITERATIONS,
            ..StorageConfig::default()
        }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        self.admin(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// Each named test, `fn name(place: &dyn Place)`, once per backend.
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test]
            fn $name() {
                super::$name(&super::Embedded::new())
            })*
        }
        mod postgres {
            $(#[test]
            #[ignore = "needs PostgreSQL: MARTLET_TEST_POSTGRES_URL"]
            fn $name() {
                super::$name(&super::PostgresDb::new())
            })*
        }
    };
}

on_each_backend!(
    users_lifecycle,
    credentials_are_scram_secrets_for_the_password,
    unknown_users_get_the_same_made_up_credentials_across_restarts,
    roster_put_replaces_by_contact_and_stays_per_user,
    offline_keeps_order_and_limit,
    delete_user_cascades,
    data_survives_close_and_reopen,
    a_panicking_job_fails_only_its_caller,
    archive_pages_both_ways_and_honours_preferences,
    archive_drops_the_oldest_past_the_cap,
    documents_are_per_user_and_key,
    capped_documents_are_replaced_but_never_pass_the_cap,
    several_documents_change_in_one_call,
);

fn item(contact: &str, subscription: Subscription) -> RosterItem {
    RosterItem {
        jid: contact.into(),
        name: Some(format!("{contact} nick")),
        groups: vec!["Friends".into()],
        subscription,
        ask_out: false,
        pending_in: true,
        listed: true,
    }
}

const ALICE: &str = "alice@localhost";

fn users_lifecycle(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        assert!(s.create_user(ALICE.into(), "pw1".into(), WhenBusy::Wait).await.unwrap());
        assert!(!s.create_user(ALICE.into(), "other".into(), WhenBusy::Wait).await.unwrap());
        assert!(s
            .create_user("bob@localhost".into(), "pw".into(), WhenBusy::Wait)
            .await
            .unwrap());
        assert_eq!(s.list_users().await.unwrap(), [ALICE, "bob@localhost"]);
        assert!(s.user_exists(ALICE.into()).await.unwrap());
        assert!(!s.user_exists("carol@localhost".into()).await.unwrap());

        assert!(s.verify_plain(ALICE.into(), "pw1".into()).await.unwrap());
        assert!(!s.verify_plain(ALICE.into(), "other".into()).await.unwrap());
        assert!(!s
            .verify_plain("carol@localhost".into(), "pw1".into())
            .await
            .unwrap());

        assert!(s.set_password(ALICE.into(), "pw2".into(), WhenBusy::Wait).await.unwrap());
        assert!(!s
            .set_password("carol@localhost".into(), "pw".into(), WhenBusy::Wait)
            .await
            .unwrap());
        assert!(!s.verify_plain(ALICE.into(), "pw1".into()).await.unwrap());
        assert!(s.verify_plain(ALICE.into(), "pw2".into()).await.unwrap());

        assert!(s.delete_user(ALICE.into()).await.unwrap());
        assert!(!s.delete_user(ALICE.into()).await.unwrap());
        assert_eq!(s.list_users().await.unwrap(), ["bob@localhost"]);
    });
}

fn credentials_are_scram_secrets_for_the_password(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let (made_up, known) = s.credentials_or_made_up(ALICE.into()).await.unwrap();
        assert!(!known);
        assert_eq!(made_up.sha256.iterations, TEST_ITERATIONS);
        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        let (c, known) = s.credentials_or_made_up(ALICE.into()).await.unwrap();
        assert!(known);
        assert_ne!(c.sha256.salt, made_up.sha256.salt);
        assert_eq!(c.sha1.salt.len(), 16);
        assert_eq!(c.sha256.iterations, TEST_ITERATIONS);
        assert_eq!(scram_keys(ScramHash::Sha256, "pw", &c.sha256.salt, TEST_ITERATIONS).unwrap(), c.sha256);
        assert_eq!(scram_keys(ScramHash::Sha1, "pw", &c.sha1.salt, TEST_ITERATIONS).unwrap(), c.sha1);
        // The salted password, which would log in, is kept nowhere: only keys derived from it.
        let salted = sasl::secret::Pbkdf2Sha256::derive("pw", &c.sha256.salt, TEST_ITERATIONS).unwrap().digest;
        assert!(c.sha256.stored_key != salted && c.sha256.server_key != salted);
    });
}

/// A probe for a name that is no account sees the same made-up salt every time, also after
/// a restart: the secret behind it is kept in the store, shared by a cluster's nodes.
fn unknown_users_get_the_same_made_up_credentials_across_restarts(place: &dyn Place) {
    let first = block_on(place.open().credentials_or_made_up("nobody@localhost".into())).unwrap();
    let again = block_on(place.open().credentials_or_made_up("nobody@localhost".into())).unwrap();
    assert_eq!(first, again);
    let other = block_on(place.open().credentials_or_made_up("somebody@localhost".into())).unwrap();
    assert_ne!(first.0.sha256.salt, other.0.sha256.salt);
}

fn roster_put_replaces_by_contact_and_stays_per_user(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let bob = item("bob@localhost", Subscription::To);
        let carol = item("carol@example.org", Subscription::None);
        s.roster_put(ALICE.into(), carol.clone()).await.unwrap();
        s.roster_put(ALICE.into(), bob.clone()).await.unwrap();
        // A neighbour whose key sorts right after alice's must not leak in.
        s.roster_put("alice@localhostx".into(), bob.clone())
            .await
            .unwrap();
        assert_eq!(
            s.roster(ALICE.into()).await.unwrap(),
            [bob.clone(), carol.clone()]
        );

        let bob_both = RosterItem {
            subscription: Subscription::Both,
            ..bob
        };
        s.roster_put(ALICE.into(), bob_both.clone()).await.unwrap();
        assert_eq!(s.roster(ALICE.into()).await.unwrap(), [bob_both, carol]);

        assert!(s
            .roster_remove(ALICE.into(), "carol@example.org".into())
            .await
            .unwrap());
        assert!(!s
            .roster_remove(ALICE.into(), "carol@example.org".into())
            .await
            .unwrap());
        assert_eq!(s.roster(ALICE.into()).await.unwrap().len(), 1);
        assert!(s
            .roster("nobody@localhost".into())
            .await
            .unwrap()
            .is_empty());
    });
}

fn offline_keeps_order_and_limit(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        for n in 0..3 {
            assert!(s
                .offline_push(ALICE.into(), format!("<m{n}/>"), 3)
                .await
                .unwrap());
        }
        assert!(!s
            .offline_push(ALICE.into(), "<m3/>".into(), 3)
            .await
            .unwrap());
        assert!(s
            .offline_push("bob@localhost".into(), "<b/>".into(), 3)
            .await
            .unwrap());
        assert_eq!(s.offline_count(ALICE.into()).await.unwrap(), 3);

        assert_eq!(
            s.offline_take(ALICE.into()).await.unwrap(),
            ["<m0/>", "<m1/>", "<m2/>"]
        );
        assert_eq!(s.offline_count(ALICE.into()).await.unwrap(), 0);
        assert!(s.offline_take(ALICE.into()).await.unwrap().is_empty());
        assert_eq!(s.offline_count("bob@localhost".into()).await.unwrap(), 1);

        // Room again after taking.
        assert!(s
            .offline_push(ALICE.into(), "<m4/>".into(), 3)
            .await
            .unwrap());
        assert_eq!(s.offline_take(ALICE.into()).await.unwrap(), ["<m4/>"]);
    });
}

fn row(owner: &str, id: u64, with: &str) -> ArchiveRow {
    ArchiveRow { owner: owner.into(), id, with: with.into(), xml: format!("<m{id}/>") }
}

/// The archive is written behind the caller's back (group commit): wait until `n` rows are
/// there.
async fn archived(s: &Storage, owner: &str, n: usize) -> ArchivePage {
    let all = ArchiveQuery { max: 1000, ..Default::default() };
    for _ in 0..200 {
        let page = s.archive_query(owner.into(), all.clone()).await.unwrap();
        if page.items.len() >= n {
            return page;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{owner}'s archive never reached {n} rows");
}

/// A per-owner cap no test archive reaches.
const NO_CAP: usize = 1_000_000;

/// The owner's archive, as the numbers its rows were made with (`row(_, n << 10, _)`), once
/// the writer has stored the row made with `newest`.
async fn archive_through(s: &Storage, owner: &str, newest: u64) -> Vec<u64> {
    let all = ArchiveQuery { max: 1000, ..Default::default() };
    for _ in 0..200 {
        let page = s.archive_query(owner.into(), all.clone()).await.unwrap();
        if page.items.last().map(|i| i.0) == Some(newest << 10) {
            return page.items.iter().map(|i| i.0 >> 10).collect();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{owner}'s archive never got row {newest}");
}

fn archive_drops_the_oldest_past_the_cap(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let bob = "bob@localhost";
        // Past the cap within one batch, then one row at a time; each owner on its own.
        s.archive((1..=5).map(|n| row(ALICE, n << 10, bob)).collect(), 3).await;
        s.archive(vec![row(bob, 1 << 10, ALICE)], 3).await;
        assert_eq!(archive_through(&s, ALICE, 5).await, [3, 4, 5]);
        for n in 6..=8 {
            s.archive(vec![row(ALICE, n << 10, bob)], 3).await;
        }
        assert_eq!(archive_through(&s, ALICE, 8).await, [6, 7, 8]);
        assert_eq!(archive_through(&s, bob, 1).await, [1]);
        // A row stored again is no new row: it pushes none out, nor counts as one later.
        s.archive(vec![row(ALICE, 8 << 10, bob)], 3).await;
        s.archive(vec![row(ALICE, 9 << 10, bob)], 3).await;
        assert_eq!(archive_through(&s, ALICE, 9).await, [7, 8, 9]);
        // A lower cap trims at the next append; a deleted user's count goes with the rows.
        s.archive(vec![row(ALICE, 10 << 10, bob)], 2).await;
        assert_eq!(archive_through(&s, ALICE, 10).await, [9, 10]);
        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        s.delete_user(ALICE.into()).await.unwrap();
        s.archive(vec![row(ALICE, 11 << 10, bob), row(ALICE, 12 << 10, bob)], 2).await;
        assert_eq!(archive_through(&s, ALICE, 12).await, [11, 12]);
    });
}

/// Four rows archived, then `to_old_schema` takes the archive counts away as a build before
/// them left the data; reopened, the counts are made from the rows, so the cap holds.
fn archive_counts_are_made_for_an_old_schema(place: &dyn Place, to_old_schema: impl FnOnce()) {
    let s = place.open();
    block_on(s.archive((1..=4).map(|n| row(ALICE, n << 10, "bob@localhost")).collect(), NO_CAP));
    assert_eq!(block_on(archive_through(&s, ALICE, 4)), [1, 2, 3, 4]);
    drop(s);
    to_old_schema();
    let s = place.open();
    block_on(s.archive(vec![row(ALICE, 5 << 10, "bob@localhost")], 3));
    assert_eq!(block_on(archive_through(&s, ALICE, 5)), [3, 4, 5]);
}

#[test]
fn embedded_archive_counts_are_made_for_a_version_1_file() {
    let place = Embedded::new();
    let file = place.config().path.join("martlet.redb");
    archive_counts_are_made_for_an_old_schema(&place, || {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("schema_version", 1).unwrap();
        let counts: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("archive_counts");
        assert!(txn.delete_table(counts).unwrap());
        txn.commit().unwrap();
    });
}

#[test]
#[ignore = "needs PostgreSQL: MARTLET_TEST_POSTGRES_URL"]
fn postgres_archive_counts_are_made_by_migration_4() {
    let place = PostgresDb::new();
    archive_counts_are_made_for_an_old_schema(&place, || {
        // A version 3 database: without what migration 4 and every later one made.
        let mut client = place.client();
        postgres_back_to_version_5(&mut client);
        let sql = "DROP TABLE mam_archive_counts; DROP TABLE server_secrets; DELETE FROM martlet_schema_migrations WHERE version >= 4";
        client.batch_execute(sql).unwrap();
    });
}

/// Undoes migration 6 on a database without accounts: salted-password columns again.
fn postgres_back_to_version_5(client: &mut ::postgres::Client) {
    client
        .batch_execute(
            "ALTER TABLE users DROP COLUMN sha1_stored_key, DROP COLUMN sha1_server_key, DROP COLUMN sha256_stored_key, \
             DROP COLUMN sha256_server_key, ADD COLUMN sha1_digest BYTEA NOT NULL, ADD COLUMN sha256_digest BYTEA NOT NULL; \
             DELETE FROM martlet_schema_migrations WHERE version >= 6",
        )
        .unwrap();
}

/// An account stored as the salted passwords of schema 2 (redb) or 5 (PostgreSQL) keeps
/// its password once the store is opened and converted.
fn old_accounts_keep_working(place: &dyn Place, write_old_account: impl FnOnce(&[u8], &[u8], &[u8], &[u8])) {
    drop(place.open()); // the current schema, made
    let (salt1, salt256) = (b"sha1-salt-16byte".as_slice(), b"sha256-salt-16by".as_slice());
    let sha1 = sasl::secret::Pbkdf2Sha1::derive("old-pw", salt1, TEST_ITERATIONS).unwrap().digest;
    let sha256 = sasl::secret::Pbkdf2Sha256::derive("old-pw", salt256, TEST_ITERATIONS).unwrap().digest;
    write_old_account(salt1, &sha1, salt256, &sha256);
    let s = place.open();
    assert!(block_on(s.verify_plain(ALICE.into(), "old-pw".into())).unwrap());
    assert!(!block_on(s.verify_plain(ALICE.into(), "other".into())).unwrap());
    let (c, known) = block_on(s.credentials_or_made_up(ALICE.into())).unwrap();
    assert!(known);
    assert_eq!(c.sha1, scram_keys(ScramHash::Sha1, "old-pw", salt1, TEST_ITERATIONS).unwrap());
}

#[test]
fn embedded_schema_2_accounts_keep_working() {
    let place = Embedded::new();
    let file = place.config().path.join("martlet.redb");
    old_accounts_keep_working(&place, |salt1, sha1, salt256, sha256| {
        let db = redb::Database::create(&file).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta).unwrap().insert("schema_version", 2).unwrap();
        // Schema 2's record: per mechanism (salt, iterations, salted password), postcard.
        let old = ((salt1, TEST_ITERATIONS, sha1), (salt256, TEST_ITERATIONS, sha256));
        let users: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("users");
        txn.open_table(users).unwrap().insert(ALICE, postcard::to_allocvec(&old).unwrap().as_slice()).unwrap();
        txn.commit().unwrap();
    });
}

#[test]
#[ignore = "needs PostgreSQL: MARTLET_TEST_POSTGRES_URL"]
fn postgres_schema_5_accounts_keep_working() {
    let place = PostgresDb::new();
    old_accounts_keep_working(&place, |salt1, sha1, salt256, sha256| {
        let mut client = place.client();
        postgres_back_to_version_5(&mut client);
        let rounds = TEST_ITERATIONS as i32;
        client
            .execute(
                "INSERT INTO users (jid, sha1_salt, sha1_iterations, sha1_digest, sha256_salt, sha256_iterations, sha256_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&ALICE, &salt1, &rounds, &sha1, &salt256, &rounds, &sha256],
            )
            .unwrap();
    });
}

fn archive_pages_both_ways_and_honours_preferences(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let bob = "bob@localhost";
        let never = MamPrefs { default: DefaultMode::Always, always: vec![], never: vec!["spam@localhost".into()] };
        s.set_mam_prefs(bob.into(), never.clone()).await.unwrap();
        assert_eq!(s.mam_prefs(bob.into()).await.unwrap(), never);
        assert_eq!(s.mam_prefs(ALICE.into()).await.unwrap(), MamPrefs::default());
        s.archive((1..=5).map(|id| row(ALICE, id << 10, if id % 2 == 0 { bob } else { "carol@localhost" })).collect(), NO_CAP).await;
        s.archive(vec![row(bob, 7 << 10, ALICE), row(bob, 8 << 10, "spam@localhost")], NO_CAP).await;
        assert_eq!(archived(&s, ALICE, 5).await.items.len(), 5);
        let bobs = archived(&s, bob, 1).await;
        assert_eq!(bobs.items, vec![(7 << 10, ALICE.to_owned(), format!("<m{}/>", 7 << 10))]);

        let ids = |p: &ArchivePage| p.items.iter().map(|i| i.0 >> 10).collect::<Vec<_>>();
        let first = ArchiveQuery { max: 2, ..Default::default() };
        let page = s.archive_query(ALICE.into(), first).await.unwrap();
        assert_eq!((ids(&page), page.complete), (vec![1, 2], false));
        let next = ArchiveQuery { max: 2, after_id: Some(2 << 10), ..Default::default() };
        assert_eq!(ids(&s.archive_query(ALICE.into(), next).await.unwrap()), vec![3, 4]);
        let last = ArchiveQuery { max: 2, from_end: true, ..Default::default() };
        let page = s.archive_query(ALICE.into(), last).await.unwrap();
        assert_eq!((ids(&page), page.complete), (vec![4, 5], false));
        let with = ArchiveQuery { max: 10, with: Some(bob.into()), before_id: Some(4 << 10), ..Default::default() };
        let page = s.archive_query(ALICE.into(), with).await.unwrap();
        assert_eq!((ids(&page), page.complete), (vec![2], true));

        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        s.delete_user(ALICE.into()).await.unwrap();
        let all = ArchiveQuery { max: 10, ..Default::default() };
        assert!(s.archive_query(ALICE.into(), all).await.unwrap().items.is_empty());
    });
}

fn documents_are_per_user_and_key(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let get = |user: &str, key: &str| s.doc_get(user.into(), key.into());
        assert_eq!(get(ALICE, "vcard").await.unwrap(), None);
        s.doc_put(ALICE.into(), "vcard".into(), Some("<vCard/>".into())).await.unwrap();
        s.doc_put(ALICE.into(), "vcard".into(), Some("<vCard>2</vCard>".into())).await.unwrap();
        s.doc_put(ALICE.into(), "blocklist".into(), Some("x@d".into())).await.unwrap();
        assert_eq!(get(ALICE, "vcard").await.unwrap().as_deref(), Some("<vCard>2</vCard>"));
        assert_eq!(get("bob@localhost", "vcard").await.unwrap(), None);
        s.doc_put(ALICE.into(), "vcard".into(), None).await.unwrap();
        assert_eq!(get(ALICE, "vcard").await.unwrap(), None);
        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        s.delete_user(ALICE.into()).await.unwrap();
        assert_eq!(get(ALICE, "blocklist").await.unwrap(), None);
    });
}

fn several_documents_change_in_one_call(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let get = |key: &str| s.doc_get(ALICE.into(), key.into());
        s.doc_put(ALICE.into(), "a".into(), Some("1".into())).await.unwrap();
        let docs = vec![("a".to_owned(), None), ("b".to_owned(), Some("2".to_owned())), ("c".to_owned(), Some("3".to_owned()))];
        s.docs_put(ALICE.into(), docs).await.unwrap();
        assert_eq!((get("a").await.unwrap(), get("b").await.unwrap().as_deref(), get("c").await.unwrap().as_deref()), (None, Some("2"), Some("3")));
    });
}

fn capped_documents_are_replaced_but_never_pass_the_cap(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        let put = |user: &str, key: &str, value: &str| s.doc_put_capped(user.into(), key.into(), value.into(), "private:", 2);
        // Keys outside the prefix, sorting before and after it, are not counted.
        s.doc_put(ALICE.into(), "pep".into(), Some("x".into())).await.unwrap();
        s.doc_put(ALICE.into(), "vcard".into(), Some("<vCard/>".into())).await.unwrap();
        assert!(put(ALICE, "private:a", "<a/>").await.unwrap());
        assert!(put(ALICE, "private:b", "<b/>").await.unwrap());
        assert!(!put(ALICE, "private:c", "<c/>").await.unwrap());
        assert_eq!(s.doc_get(ALICE.into(), "private:c".into()).await.unwrap(), None);
        assert!(put(ALICE, "private:a", "<a>2</a>").await.unwrap(), "a replacement at the cap");
        assert_eq!(s.doc_get(ALICE.into(), "private:a".into()).await.unwrap().as_deref(), Some("<a>2</a>"));
        assert!(put("bob@localhost", "private:c", "<c/>").await.unwrap(), "bob has room of his own");
        s.doc_put(ALICE.into(), "private:b".into(), None).await.unwrap();
        assert!(put(ALICE, "private:c", "<c/>").await.unwrap(), "a removed document makes room");
    });
}

fn delete_user_cascades(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        s.roster_put(ALICE.into(), item("bob@localhost", Subscription::Both))
            .await
            .unwrap();
        s.offline_push(ALICE.into(), "<m/>".into(), 10)
            .await
            .unwrap();
        s.roster_put("bob@localhost".into(), item(ALICE, Subscription::Both))
            .await
            .unwrap();

        assert!(s.delete_user(ALICE.into()).await.unwrap());
        assert!(s.roster(ALICE.into()).await.unwrap().is_empty());
        assert_eq!(s.offline_count(ALICE.into()).await.unwrap(), 0);
        // Other users' data is untouched, including their item for alice.
        assert_eq!(s.roster("bob@localhost".into()).await.unwrap().len(), 1);
    });
}

fn data_survives_close_and_reopen(place: &dyn Place) {
    let s = place.open();
    let bob = item("bob@localhost", Subscription::From);
    block_on(async {
        s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap();
        s.roster_put(ALICE.into(), bob.clone()).await.unwrap();
        s.offline_push(ALICE.into(), "<m/>".into(), 10)
            .await
            .unwrap();
    });
    let clone = s.clone();
    drop(s);
    drop(clone);

    let s = place.open();
    block_on(async {
        assert!(s.verify_plain(ALICE.into(), "pw".into()).await.unwrap());
        assert_eq!(s.roster(ALICE.into()).await.unwrap(), [bob]);
        assert_eq!(s.offline_take(ALICE.into()).await.unwrap(), ["<m/>"]);
    });
}

#[test]
fn second_open_while_in_use_is_a_clear_error() {
    let place = Embedded::new();
    let _first = place.open();
    let e = Storage::open(&place.config()).err().unwrap().to_string();
    assert!(e.contains("martlet.redb") && e.contains("in use"), "{e}");
}

#[test]
fn a_file_of_another_schema_is_refused() {
    let place = Embedded::new();
    drop(place.open());
    let path = place.config().path;
    {
        let db = redb::Database::create(path.join("martlet.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        txn.open_table(meta)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = Storage::open(&place.config()).err().unwrap().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[test]
fn storage_is_shareable_across_cores() {
    fn assert_shareable<T: Clone + Send + Sync>() {}
    assert_shareable::<Storage>();
}

fn a_panicking_job_fails_only_its_caller(place: &dyn Place) {
    let s = place.open();
    block_on(async {
        for _ in 0..WORKERS {
            let e = s
                .run(|_| -> Result<(), StorageError> { panic!("test") })
                .await;
            assert!(matches!(e, Err(StorageError::Unavailable)));
        }
        assert!(s.create_user(ALICE.into(), "pw".into(), WhenBusy::Wait).await.unwrap());
    });
}

#[test]
#[ignore = "needs PostgreSQL: MARTLET_TEST_POSTGRES_URL"]
fn postgres_migrations_apply_once_and_refuse_a_newer_schema() {
    let place = PostgresDb::new();
    drop(place.open());
    drop(place.open()); // a second start finds the schema current
    let mut client = place.client();
    let versions: Vec<i32> = client
        .query("SELECT version FROM martlet_schema_migrations ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    client
        .execute("INSERT INTO martlet_schema_migrations (version, name) VALUES (99, 'future')", &[])
        .unwrap();
    let e = Storage::open(&place.config()).err().unwrap().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[test]
fn postgres_unreachable_is_a_clear_error_without_the_password() {
    let cfg = StorageConfig {
        backend: Backend::Postgres,
        postgres_url: "postgresql://martlet:secret-pw@127.0.0.1:1/martlet?connect_timeout=2".into(),
        ..StorageConfig::default()
    };
    let e = Storage::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("127.0.0.1") && !e.contains("secret-pw"), "{e}");
}
