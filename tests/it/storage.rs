//! Durability across restarts: every committed record is there after the server stops and
//! starts again on the same directory, and a restart never bootstraps twice.

use http::StatusCode;
use uuid::Uuid;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, insert_key};
use eliza_cloud::store::ledger::{EntryKind, NewEntry, balance_of, list_entries, post_entry};
use eliza_cloud::store::orgs::{OrgRecord, Plan, get_org, insert_org};
use eliza_cloud::store::sessions::{SessionRecord, find_live_session, insert_session};
use eliza_cloud::store::users::{Role, UserRecord, find_user_by_wallet, insert_user};
use eliza_cloud::store::{StoreError, check::check_store};

use crate::support::TestServer;

#[tokio::test]
async fn a_restart_keeps_every_committed_record() {
    let mut server = TestServer::start().await;
    let now = server.clock.now_millis();
    let org_id = Uuid::new_v4();
    let wallet = "0x00000000000000000000000000000000deadbeef".to_string();
    let key = generate_key(KeyType::Test);
    let session_hash = eliza_cloud::auth::api_key::hash_secret("session-token");
    let store = server.running().state().store.clone();
    let user_id = Uuid::new_v4();
    let record = ApiKeyRecord::fresh(
        org_id,
        user_id,
        "kept".into(),
        KeyType::Test,
        key.display_prefix(),
        key.hash(),
        now,
    );
    store
        .write_blocking({
            let wallet = wallet.clone();
            let record = record.clone();
            move |txn| {
                insert_org(
                    txn,
                    &OrgRecord {
                        id: org_id,
                        name: "Wallet 0x0000...beef".into(),
                        slug: format!("wallet-{wallet}"),
                        plan: Plan::Pro,
                        custom_rate_limit: None,
                        is_active: true,
                        created_at: now,
                        updated_at: now,
                    },
                )?;
                insert_user(
                    txn,
                    &UserRecord {
                        id: user_id,
                        organization_id: org_id,
                        name: None,
                        wallet_address: Some(wallet),
                        solana_address: None,
                        role: Role::Owner,
                        is_active: true,
                        created_at: now,
                        updated_at: now,
                    },
                )?;
                insert_key(txn, &record)?;
                insert_session(
                    txn,
                    &SessionRecord {
                        token_hash: session_hash,
                        user_id,
                        organization_id: org_id,
                        created_at: now,
                        expires_at: now + 7 * 86_400_000,
                    },
                )?;
                for (i, amount) in [5_000_000i64, -1_250_000, 250_000].into_iter().enumerate() {
                    post_entry(
                        txn,
                        NewEntry {
                            organization_id: org_id,
                            amount_micros: amount,
                            kind: if amount < 0 {
                                EntryKind::Debit
                            } else {
                                EntryKind::Credit
                            },
                            description: format!("row {i}"),
                            idempotency_key: format!("restart-{i}"),
                            metadata: vec![],
                        },
                        now,
                    )
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                }
                Ok::<_, StoreError>(())
            }
        })
        .await
        .unwrap();

    drop(store); // the database handle must be released for the restart to open it
    let outcome = server.restart().await;
    assert!(matches!(
        outcome,
        Some(eliza_cloud::bootstrap::BootstrapOutcome::AlreadyDone)
    ));
    let store = server.running().state().store.clone();
    let (org, user, balance, rows, session, report) = store
        .read_blocking(move |txn| {
            Ok::<_, StoreError>((
                get_org(txn, org_id)?,
                find_user_by_wallet(txn, "0x00000000000000000000000000000000deadbeef")?,
                balance_of(txn, org_id)?,
                list_entries(txn, org_id, 1, 10)?,
                find_live_session(txn, &session_hash, now)?,
                check_store(txn)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(org.unwrap().plan, Plan::Pro);
    assert_eq!(user.unwrap().id, user_id);
    assert_eq!(balance, 4_000_000);
    assert_eq!(rows.1, 3);
    assert_eq!(rows.0[0].description, "row 2");
    assert!(session.is_some());
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.organizations, 2);

    // Both the operator's key and the inserted key still authenticate.
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", key.expose())])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["organization"]["plan"], "pro");
    let operator = server.operator_key.clone();
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &operator)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn expired_and_inactive_keys_are_refused_by_the_fixed_clock() {
    let server = TestServer::start().await;
    let now = server.clock.now_millis();
    let store = server.running().state().store.clone();
    let expiring = generate_key(KeyType::Live);
    let inactive = generate_key(KeyType::Live);
    let (e, i) = (expiring.clone(), inactive.clone());
    store
        .write_blocking(move |txn| {
            let org = eliza_cloud::store::orgs::get_org_by_slug(txn, "operator")?.unwrap();
            let owner = eliza_cloud::store::users::owner_of_org(txn, org.id)?.unwrap();
            let mut a = ApiKeyRecord::fresh(
                org.id,
                owner.id,
                "expiring".into(),
                KeyType::Live,
                e.display_prefix(),
                e.hash(),
                now,
            );
            a.expires_at = Some(now + 60_000);
            insert_key(txn, &a)?;
            let mut b = ApiKeyRecord::fresh(
                org.id,
                owner.id,
                "off".into(),
                KeyType::Live,
                i.display_prefix(),
                i.hash(),
                now,
            );
            b.is_active = false;
            insert_key(txn, &b)?;
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", expiring.expose())])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    server.clock.advance_millis(60_000);
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", expiring.expose())])
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", inactive.expose())])
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(metrics.contains("reason=\"expired_key\""), "{metrics}");
    assert!(metrics.contains("reason=\"inactive_key\""), "{metrics}");
}
