//! Tests of `Storage` over the embedded backend, each in its own temp dir.

use futures_lite::future::block_on;

use super::*;

/// Few PBKDF2 rounds: the tests check plumbing, not key stretching.
const TEST_ITERATIONS: u32 = 16;

fn open(dir: &tempfile::TempDir) -> Storage {
    Storage::open(&StorageConfig {
        path: dir.path().join("data"),
        scram_iterations: TEST_ITERATIONS,
        ..StorageConfig::default()
    })
    .unwrap()
}

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

#[test]
fn users_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    block_on(async {
        assert!(s.create_user(ALICE.into(), "pw1".into()).await.unwrap());
        assert!(!s.create_user(ALICE.into(), "other".into()).await.unwrap());
        assert!(s
            .create_user("bob@localhost".into(), "pw".into())
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

        assert!(s.set_password(ALICE.into(), "pw2".into()).await.unwrap());
        assert!(!s
            .set_password("carol@localhost".into(), "pw".into())
            .await
            .unwrap());
        assert!(!s.verify_plain(ALICE.into(), "pw1".into()).await.unwrap());
        assert!(s.verify_plain(ALICE.into(), "pw2".into()).await.unwrap());

        assert!(s.delete_user(ALICE.into()).await.unwrap());
        assert!(!s.delete_user(ALICE.into()).await.unwrap());
        assert_eq!(s.list_users().await.unwrap(), ["bob@localhost"]);
    });
}

#[test]
fn credentials_are_scram_secrets_for_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    block_on(async {
        assert_eq!(s.credentials(ALICE.into()).await.unwrap(), None);
        s.create_user(ALICE.into(), "pw".into()).await.unwrap();
        let c = s.credentials(ALICE.into()).await.unwrap().unwrap();
        assert_eq!(c.sha1.salt.len(), 16);
        assert_eq!(c.sha256.iterations, TEST_ITERATIONS);
        let again = sasl::secret::Pbkdf2Sha256::derive("pw", &c.sha256.salt, TEST_ITERATIONS);
        assert_eq!(again.unwrap(), c.sha256);
        let again = sasl::secret::Pbkdf2Sha1::derive("pw", &c.sha1.salt, TEST_ITERATIONS);
        assert_eq!(again.unwrap(), c.sha1);
    });
}

#[test]
fn roster_put_replaces_by_contact_and_stays_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
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

#[test]
fn offline_keeps_order_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
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

#[test]
fn delete_user_cascades() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    block_on(async {
        s.create_user(ALICE.into(), "pw".into()).await.unwrap();
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

#[test]
fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let bob = item("bob@localhost", Subscription::From);
    block_on(async {
        s.create_user(ALICE.into(), "pw".into()).await.unwrap();
        s.roster_put(ALICE.into(), bob.clone()).await.unwrap();
        s.offline_push(ALICE.into(), "<m/>".into(), 10)
            .await
            .unwrap();
    });
    let clone = s.clone();
    drop(s);
    drop(clone);

    let s = open(&dir);
    block_on(async {
        assert!(s.verify_plain(ALICE.into(), "pw".into()).await.unwrap());
        assert_eq!(s.roster(ALICE.into()).await.unwrap(), [bob]);
        assert_eq!(s.offline_take(ALICE.into()).await.unwrap(), ["<m/>"]);
    });
}

#[test]
fn second_open_while_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(&dir);
    let cfg = StorageConfig {
        path: dir.path().join("data"),
        ..StorageConfig::default()
    };
    let e = Storage::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("martlet.redb") && e.contains("in use"), "{e}");
}

#[test]
fn a_file_of_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    drop(open(&dir));
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
    let cfg = StorageConfig {
        path,
        ..StorageConfig::default()
    };
    let e = Storage::open(&cfg).err().unwrap().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[test]
fn storage_is_shareable_across_cores() {
    fn assert_shareable<T: Clone + Send + Sync>() {}
    assert_shareable::<Storage>();
}

#[test]
fn a_panicking_job_fails_only_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    block_on(async {
        for _ in 0..WORKERS {
            let e = s
                .run(|_| -> Result<(), StorageError> { panic!("test") })
                .await;
            assert!(matches!(e, Err(StorageError::Unavailable)));
        }
        assert!(s.create_user(ALICE.into(), "pw".into()).await.unwrap());
    });
}
