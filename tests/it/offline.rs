//! The offline subcommands of the real binary: the lock while a server runs (exit 2, nothing
//! changed), keys, orgs, check, backup and version.

use http::StatusCode;

use eliza_cloud::store::Store;
use eliza_cloud::store::tables::{API_KEYS_BY_ORG, BALANCES};

use crate::support::{TestServer, run_cli};

fn data_arg(server: &TestServer) -> String {
    server.data_dir().to_str().unwrap().to_string()
}

fn cli(data: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data", data]);
    run_cli(&all, &[])
}

#[tokio::test]
async fn offline_commands_refuse_while_a_server_holds_the_database() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    let addr = server.addr().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["keys", "create"],
        vec!["keys", "list"],
        vec!["keys", "revoke", "00000000-0000-0000-0000-000000000000"],
        vec!["orgs", "list"],
        vec!["orgs", "show", "operator"],
        vec!["orgs", "set-plan", "operator", "pro"],
        vec!["orgs", "grant-credits", "operator", "5"],
        vec!["check"],
    ];
    for args in &commands {
        let (code, out, err) = cli(&data, args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("running eliza-cloud server"),
            "{args:?}: {err}"
        );
        assert!(err.contains(&addr), "names the server: {err}");
    }
    let backup = server.dir.path().join("copy.redb");
    let (code, _, err) = run_cli(
        &["backup", "--out", backup.to_str().unwrap(), "--data", &data],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(!backup.exists());

    // Nothing changed: still one key, no credits, the enterprise plan untouched.
    server.stop().await;
    let (code, out, _) = cli(&data, &["orgs", "show", "operator"]);
    assert_eq!(code, 0);
    assert!(out.contains("plan: enterprise"), "{out}");
    assert!(out.contains("balance: 0.000000"), "{out}");
    assert!(out.contains("api keys: 1"), "{out}");
}

#[tokio::test]
async fn keys_create_list_revoke() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;

    let (code, out, err) = cli(&data, &["keys", "create", "--name", "ci", "--type", "test"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_string();
    assert!(key.starts_with("ek_test_"), "{out}");
    assert!(err.contains("will not be shown again"));
    let (_, list, _) = cli(&data, &["keys", "list", "--org", "operator"]);
    assert!(
        list.contains(&key[..12]) && list.contains("\ttest\t"),
        "{list}"
    );
    assert!(!list.contains(&key));
    let id = list
        .lines()
        .find(|l| l.contains(&key[..12]))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();

    server.restart().await;
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["apiKey"]["type"], "test");
    server.stop().await;

    let (code, out, _) = cli(&data, &["keys", "revoke", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("revoked"));
    let (code, _, err) = cli(&data, &["keys", "revoke", &id]);
    assert_eq!(code, 1, "revoking twice fails: {err}");
    let (code, _, err) = cli(&data, &["keys", "create", "--type", "gold"]);
    assert_eq!(code, 1);
    assert!(err.contains("--type"));
    let (code, _, err) = cli(&data, &["keys", "create", "--org", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("no organization"));

    server.restart().await;
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await;
    r.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn orgs_list_show_set_plan_and_grant_credits() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;

    let (code, out, _) = cli(&data, &["orgs", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\toperator\tenterprise\ttrue\t0.000000\tOperator"),
        "{out}"
    );

    let (code, out, err) = cli(
        &data,
        &[
            "orgs",
            "grant-credits",
            "operator",
            "12.5",
            "--idempotency-key",
            "g1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("granted 12.500000; balance 12.500000"),
        "{out}"
    );
    // The same idempotency key again changes nothing.
    let (code, out, _) = cli(
        &data,
        &[
            "orgs",
            "grant-credits",
            "operator",
            "12.5",
            "--idempotency-key",
            "g1",
        ],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("already granted") && out.contains("balance 12.500000"),
        "{out}"
    );
    for bad in ["-1", "0", "1.0000001", "1e3", "abc"] {
        let (code, _, _) = cli(&data, &["orgs", "grant-credits", "operator", bad]);
        assert_eq!(code, 1, "{bad}");
    }

    let (code, _, _) = cli(&data, &["orgs", "set-plan", "operator", "pro"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(
        &data,
        &["orgs", "set-plan", "operator", "pro", "--rate-limit", "10"],
    );
    assert_eq!(code, 1, "a custom limit is for enterprise only: {err}");
    let (code, _, _) = cli(&data, &["orgs", "set-plan", "operator", "platinum"]);
    assert_eq!(code, 1);
    let (code, _, _) = cli(
        &data,
        &[
            "orgs",
            "set-plan",
            "operator",
            "enterprise",
            "--rate-limit",
            "900",
        ],
    );
    assert_eq!(code, 0);

    let (code, out, _) = cli(&data, &["orgs", "show", "operator"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("plan: enterprise (900 requests/minute)"),
        "{out}"
    );
    assert!(out.contains("balance: 12.500000"), "{out}");
    assert!(out.contains("ledger rows: 1"), "{out}");
    assert!(out.contains("credit\t12.500000\tOperator grant"), "{out}");

    let (code, out, _) = cli(&data, &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
}

#[tokio::test]
async fn check_reports_a_broken_ledger_invariant() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;
    let (code, _, _) = cli(&data, &["orgs", "grant-credits", "operator", "3"]);
    assert_eq!(code, 0);
    let (code, _, _) = cli(&data, &["check"]);
    assert_eq!(code, 0);

    // Break the invariant behind the ledger's back: the stored balance no longer equals the rows.
    {
        let store = Store::open(server.data_dir()).unwrap();
        store
            .write(|txn| {
                let mut balances = txn.open_table(BALANCES)?;
                let (org, _) = {
                    let mut iter = redb::ReadableTable::iter(&balances)?;
                    let (k, v) = iter.next().unwrap()?;
                    (k.value(), v.value())
                };
                balances.insert(org, 999)?;
                Ok::<_, eliza_cloud::store::StoreError>(())
            })
            .unwrap();
    }
    let (code, out, err) = cli(&data, &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("violation: balance of"), "{out}");
    assert!(out.contains("rows sum to 3000000"), "{out}");
}

#[tokio::test]
async fn check_reports_a_key_missing_from_the_organization_index() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;
    {
        let store = Store::open(server.data_dir()).unwrap();
        store
            .write(|txn| {
                let mut index = txn.open_table(API_KEYS_BY_ORG)?;
                let first = redb::ReadableTable::iter(&index)?
                    .next()
                    .unwrap()?
                    .0
                    .value();
                index.remove(first)?;
                Ok::<_, eliza_cloud::store::StoreError>(())
            })
            .unwrap();
    }
    let (code, out, err) = cli(&data, &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("API key organization index does not match the keys"),
        "{out}"
    );
}

#[tokio::test]
async fn backup_writes_a_consistent_copy() {
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;
    let (code, _, _) = cli(&data, &["orgs", "grant-credits", "operator", "7"]);
    assert_eq!(code, 0);
    let out_file = server.dir.path().join("backup.redb");
    let (code, out, err) = run_cli(
        &[
            "backup",
            "--out",
            out_file.to_str().unwrap(),
            "--data",
            &data,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backup written"));
    // A second backup to the same file is refused.
    let (code, _, err) = run_cli(
        &[
            "backup",
            "--out",
            out_file.to_str().unwrap(),
            "--data",
            &data,
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("already exists"));

    // The copy is a working data directory with the same records.
    let restored = server.dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&out_file, restored.join(eliza_cloud::store::DATABASE_FILE)).unwrap();
    let restored = restored.to_str().unwrap();
    let (code, out, _) = cli(restored, &["orgs", "show", "operator"]);
    assert_eq!(code, 0);
    assert!(out.contains("balance: 7.000000"), "{out}");
    let (code, out, _) = cli(restored, &["check"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn version_and_missing_database() {
    let (code, out, _) = run_cli(&["version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("eliza-cloud {}", env!("CARGO_PKG_VERSION"))));
    assert!(out.contains(&format!(
        "schema {}",
        eliza_cloud::store::migrations::SCHEMA_VERSION
    )));
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("none");
    let (code, _, err) = run_cli(&["check", "--data", missing.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no database"), "{err}");
    assert!(
        !missing.exists(),
        "offline commands never create a database"
    );
    // ELIZA_CLOUD_DATA is read too.
    let (code, _, err) = run_cli(
        &["orgs", "list"],
        &[("ELIZA_CLOUD_DATA", missing.to_str().unwrap())],
    );
    assert_eq!(code, 1);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

/// The schema version recorded in a database file, read without changing it.
fn recorded_version(path: &std::path::Path) -> u64 {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    eliza_cloud::store::migrations::stored_version(&db).unwrap()
}

#[tokio::test]
async fn backup_and_check_never_migrate_an_older_database() {
    use eliza_cloud::store::migrations::{SCHEMA_VERSION, force_schema_version};
    let mut server = TestServer::start().await;
    let data = data_arg(&server);
    server.stop().await;
    let file = server.data_dir().join(eliza_cloud::store::DATABASE_FILE);
    // As an older binary left it.
    let older = SCHEMA_VERSION - 1;
    {
        let db = redb::Database::open(&file).unwrap();
        force_schema_version(&db, older).unwrap();
    }
    let digest = |path: &std::path::Path| {
        use sha2::{Digest, Sha256};
        Sha256::digest(std::fs::read(path).unwrap()).to_vec()
    };
    let before = digest(&file);
    // backup copies it as it is.
    let out_file = server.dir.path().join("older.redb");
    let (code, out, err) = cli(&data, &["backup", "--out", out_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("schema {older}")), "{out}");
    assert_eq!(recorded_version(&file), older, "backup migrated the source");
    assert_eq!(recorded_version(&out_file), older, "the copy is as it was");
    // check (and every other offline command) refuses it with a message, changing nothing.
    for args in [
        &["check"][..],
        &["keys", "list"],
        &["payments", "pending"],
        &["orgs", "grant-credits", "operator", "1"],
    ] {
        let (code, _, err) = cli(&data, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("offline commands never migrate"), "{err}");
        assert!(digest(&file) == before, "{args:?} changed the file");
    }
    // The server migrates it.
    server.restart().await;
    server.stop().await;
    assert_eq!(recorded_version(&file), SCHEMA_VERSION);
    let (code, out, _) = cli(&data, &["check"]);
    assert_eq!(code, 0, "{out}");
}
