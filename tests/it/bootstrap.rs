//! First start and later starts of the real binary: the operator key printed once, or the
//! provided key registered; a malformed provided key stops start-up.

use std::os::unix::fs::PermissionsExt;

use http::StatusCode;

use crate::support::{Binary, run_cli, temp_data_dir};

fn printed_key(stderr: &str) -> Option<String> {
    stderr
        .split_whitespace()
        .find(|w| w.starts_with("ek_live_") || w.starts_with("ek_test_"))
        .map(str::to_string)
}

#[tokio::test]
async fn first_start_prints_one_key_and_a_second_start_prints_nothing() {
    let (_tmp, data) = temp_data_dir();
    let server = Binary::serve(&data, &[], &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory must be private");
    let health = server.client().get("/healthz", &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let (code, stderr) = server.terminate();
    assert_eq!(code, 0, "{stderr}");
    let key = printed_key(&stderr).expect("the first start prints a key");
    assert!(stderr.contains("will not be shown again"), "{stderr}");
    assert_eq!(stderr.matches(&key).count(), 1, "printed exactly once");
    eliza_cloud::auth::api_key::parse_key(&key).expect("a well-formed live key");
    assert!(key.starts_with("ek_live_"));

    // Second start: nothing printed, and the first key still authenticates. Stopped with
    // SIGINT this time (Ctrl-C): the same clean drain and exit 0.
    let server = Binary::serve(&data, &[], &[]);
    let r = server
        .client()
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["organization"]["name"], "Operator");
    let (code, stderr) = server.signal("INT");
    assert_eq!(code, 0, "{stderr}");
    assert!(printed_key(&stderr).is_none(), "{stderr}");

    let (code, out, _) = run_cli(&["keys", "list", "--data", data.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "header + exactly one key:\n{out}");
    assert!(out.contains(&key[..12]));
    assert!(!out.contains(&key), "list never shows a secret");
}

#[tokio::test]
async fn a_provided_bootstrap_key_is_registered_instead() {
    // `keys generate` makes a well-formed key without any database.
    let (code, out, _) = run_cli(&["keys", "generate"], &[]);
    assert_eq!(code, 0);
    let provided = out.trim().to_string();
    eliza_cloud::auth::api_key::parse_key(&provided).unwrap();
    let (_tmp, data) = temp_data_dir();
    let server = Binary::serve(&data, &[], &[("ELIZA_CLOUD_BOOTSTRAP_KEY", &provided)]);
    let r = server
        .client()
        .get(
            "/api/v1/auth/whoami",
            &[("authorization", &format!("Bearer {provided}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let (code, stderr) = server.terminate();
    assert_eq!(code, 0);
    assert!(printed_key(&stderr).is_none(), "nothing printed:\n{stderr}");

    // A later start with another key set ignores it: never a second key.
    let other = eliza_cloud::auth::api_key::generate_key(eliza_cloud::store::keys::KeyType::Live);
    let server = Binary::serve(&data, &[], &[("ELIZA_CLOUD_BOOTSTRAP_KEY", other.expose())]);
    let r = server
        .client()
        .get("/api/v1/auth/whoami", &[("x-api-key", other.expose())])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let (_, stderr) = server.terminate();
    assert!(stderr.contains("ignored"), "{stderr}");
}

#[test]
fn a_malformed_bootstrap_key_stops_start_up() {
    let (_tmp, data) = temp_data_dir();
    // Right shape, wrong checksum.
    let mut key = eliza_cloud::auth::api_key::generate_key(eliza_cloud::store::keys::KeyType::Live)
        .expose()
        .to_string();
    key.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
    let (code, _, stderr) = run_cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data.to_str().unwrap(),
        ],
        &[("ELIZA_CLOUD_BOOTSTRAP_KEY", &key)],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("ELIZA_CLOUD_BOOTSTRAP_KEY"), "{stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    assert!(!stderr.contains(&key), "a secret is never echoed");
    assert!(!data.exists(), "nothing was created");
}

#[test]
fn bad_flags_and_env_stop_start_up_with_a_message() {
    let (_tmp, data) = temp_data_dir();
    let (code, _, stderr) = run_cli(
        &["serve", "--data", data.to_str().unwrap()],
        &[("ELIZA_CLOUD_LOG_FORMAT", "xml")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("ELIZA_CLOUD_LOG_FORMAT"), "{stderr}");
    let (code, _, stderr) = run_cli(&["serve", "--listen", "nowhere"], &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[test]
fn help_documents_every_serve_flag_and_its_variable() {
    let (_, out, err) = run_cli(&["serve", "--help"], &[]);
    let help = format!("{out}{err}");
    for (flag, var) in [
        ("--listen", "ELIZA_CLOUD_LISTEN"),
        ("--data", "ELIZA_CLOUD_DATA"),
        ("--public-url", "ELIZA_CLOUD_PUBLIC_URL"),
        ("--log-format", "ELIZA_CLOUD_LOG_FORMAT"),
        ("--log-level", "ELIZA_CLOUD_LOG_LEVEL"),
        ("--max-connections", "ELIZA_CLOUD_MAX_CONNECTIONS"),
        ("--trust-proxy", "ELIZA_CLOUD_TRUST_PROXY"),
        ("--header-timeout", "ELIZA_CLOUD_HEADER_TIMEOUT"),
        ("--body-timeout", "ELIZA_CLOUD_BODY_TIMEOUT"),
        ("--shutdown-timeout", "ELIZA_CLOUD_SHUTDOWN_TIMEOUT"),
        ("--max-body-bytes", "ELIZA_CLOUD_MAX_BODY_BYTES"),
    ] {
        assert!(help.contains(flag), "{flag} missing from help:\n{help}");
        assert!(help.contains(var), "{var} missing from help:\n{help}");
    }
    assert!(help.contains("ELIZA_CLOUD_BOOTSTRAP_KEY"));
}
