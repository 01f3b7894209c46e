//! The `acme` issuer (SPEC §11) against pebble, Let's Encrypt's test CA, started by the test on
//! loopback with its own TLS certificate (made here with rcgen, its root given with `--acme-ca`)
//! and its DNS pointed at the test's DNS server. Pebble validates by HTTP-01 against the plain
//! listener; the certificate is then served by SNI, renewed by the manual clock at two thirds
//! of its lifetime, kept across a restart without a reissue, and dropped with its domain.
//!
//! Needs `/usr/bin/pebble` (Debian's `pebble`, installed by `.ci/run`; `PEBBLE` names another).
//! Without it the test says so on stderr and stops; under CI (`CI` or
//! `ELIZA_CLOUD_REQUIRE_TEST_TOOLS` set, as `.ci/run` does) it fails instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use eliza_cloud::domains::acme::{AcmeConfig, run_pass};
use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::dns::Dns;
use crate::support::{TestServer, free_port};

/// Where pebble is (`PEBBLE` names another), or `None` after saying loudly that it is missing.
pub fn pebble_binary() -> Option<PathBuf> {
    std::env::var_os("PEBBLE")
        .map(PathBuf::from)
        .or_else(|| crate::support::required_tool(&["pebble"], "pebble"))
}

/// A running pebble; killed on drop.
pub struct Pebble {
    child: Child,
    pub directory: String,
    pub management: SocketAddr,
    /// The root of pebble's own TLS (its directory and management interface).
    pub tls_root_pem: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pebble {
    /// Starts pebble: validations go to `http_port` on whatever `dns` resolves a name to.
    pub async fn start(binary: &Path, dir: &Path, http_port: u16, dns: SocketAddr) -> Pebble {
        // Its TLS: a root and a leaf for 127.0.0.1, made here (Debian ships none).
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root.distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test TLS root");
        let root_cert = root.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::new(root, root_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let cert_file = dir.join("pebble-cert.pem");
        let key_file = dir.join("pebble-key.pem");
        std::fs::write(&cert_file, leaf_cert.pem()).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        let listen = free_port();
        let management = free_port();
        let config = json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert_file,
                "privateKey": key_file,
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_file = dir.join("pebble-config.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let child = Command::new(binary)
            .arg("-config")
            .arg(&config_file)
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order validates again, renewals included.
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            tls_root_pem: root_cert.pem(),
        };
        // Pebble is ready when its directory answers (a process starting, not a rule of time).
        let directory = SocketAddr::from(([127, 0, 0, 1], listen));
        for _ in 0..200 {
            if https_get(directory, "/dir", &pebble.tls_root_pem, "127.0.0.1")
                .await
                .is_some_and(|body| body.contains("newOrder"))
            {
                return pebble;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default();
        panic!("pebble did not start:\n{log}");
    }

    /// The root pebble's certificates chain to (made anew at each start).
    pub async fn issuing_root(&self) -> String {
        https_get(self.management, "/roots/0", &self.tls_root_pem, "127.0.0.1")
            .await
            .expect("pebble's root")
    }
}

/// A wildcard certificate as an operator would bring one, and the root it chains to.
fn operator_wildcard(name: &str) -> ((String, eliza_cloud::domains::certs::KeyPem), String) {
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        (
            leaf.pem(),
            eliza_cloud::domains::certs::KeyPem(key.serialize_pem()),
        ),
        root_cert.pem(),
    )
}

fn client_config(roots_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A handshake with SNI `name`, trusting `roots_pem` (at the real time: pebble's certificates
/// start now).
async fn handshake(addr: SocketAddr, roots_pem: &str, name: &str) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(client_config(roots_pem, &[b"http/1.1"]))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 GET over TLS; the body of a 200, else `None`.
async fn https_get(addr: SocketAddr, path: &str, roots_pem: &str, name: &str) -> Option<String> {
    let mut tls = handshake(addr, roots_pem, name).await.ok()?;
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    tls.write_all(head.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn leaf(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn status(server: &TestServer, app: &str, domain: &str) -> serde_json::Value {
    let owner = server.operator_key.clone();
    let answer = server
        .json_as(
            &owner,
            Method::POST,
            &format!("/api/v1/apps/{app}/domains/status"),
            json!({ "domain": domain }),
        )
        .await;
    answer.assert_status(StatusCode::OK);
    answer.json()
}

/// Claims `domain` for `app`, publishes its TXT token and verifies it.
async fn claim_and_verify(server: &TestServer, dns: &Dns, app: &str, domain: &str) {
    let owner = server.operator_key.clone();
    let domains = format!("/api/v1/apps/{app}/domains");
    let claim = server
        .json_as(&owner, Method::POST, &domains, json!({ "domain": domain }))
        .await;
    claim.assert_status(StatusCode::CREATED);
    let claim = claim.json();
    dns.set_txt(
        &format!("_eliza-cloud-verify.{domain}."),
        claim["verificationRecord"]["value"].as_str().unwrap(),
    )
    .await;
    let verified = server
        .json_as(
            &owner,
            Method::POST,
            &format!("{domains}/verify"),
            json!({ "domain": domain }),
        )
        .await
        .json();
    assert_eq!(verified["verified"], true, "{verified}");
}

#[tokio::test]
async fn pebble_issues_renews_and_the_listener_serves_by_sni() {
    let Some(binary) = pebble_binary() else {
        return;
    };
    let dns = Dns::start().await;
    let work = tempfile::tempdir().unwrap();
    // The plain listener's port is chosen first and kept across the restart: pebble validates
    // HTTP-01 there.
    let http_port = free_port();
    let pebble = Pebble::start(&binary, work.path(), http_port, dns.addr).await;
    // The operator's wildcard for app subdomains (`--apps-wildcard-cert`/`-key`).
    let (wildcard, wildcard_root) = operator_wildcard("*.apps.localhost");
    let mut server = TestServer::start_with({
        let addr = dns.addr;
        let acme = AcmeConfig {
            directory: pebble.directory.clone(),
            email: Some("ops@example.test".into()),
            extra_roots_pem: Some(pebble.tls_root_pem.clone()),
        };
        move |c| {
            c.listen = SocketAddr::from(([127, 0, 0, 1], http_port));
            c.apps.dns_resolver = Some(addr);
            c.apps.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            c.apps.acme = Some(acme);
            c.apps.apps_wildcard = Some(wildcard);
        }
    })
    .await;
    let state = server.running().state().clone();
    let roots = pebble.issuing_root().await;
    let owner = server.operator_key.clone();
    let app = server
        .json_as(
            &owner,
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Shop", "app_url": "https://s.example"}),
        )
        .await
        .json()["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tls_addr = server.running().tls_addr().unwrap();
    let page = https_get(tls_addr, "/", &wildcard_root, "shop.apps.localhost")
        .await
        .unwrap();
    assert!(page.contains("\"name\":\"Shop\""), "{page}");

    // An unverified claim is never ordered.
    server
        .json_as(
            &owner,
            Method::POST,
            &format!("/api/v1/apps/{app}/domains"),
            json!({"domain": "claimed.example.test"}),
        )
        .await
        .assert_status(StatusCode::CREATED);

    // A verified domain whose name does not resolve: the order fails, the status says why, and
    // it waits out its backoff (5 minutes by the server's clock).
    claim_and_verify(&server, &dns, &app, "late.example.test").await;
    run_pass(&state).await;
    let late = status(&server, &app, "late.example.test").await;
    assert_eq!(late["sslStatus"], "error", "{late}");
    assert!(
        late["sslError"].as_str().unwrap().contains("validation"),
        "{late}"
    );
    assert!(late["sslRetryAt"].is_string(), "{late}");
    assert!(late["issuer"].is_null());
    let pass = run_pass(&state).await;
    assert!(pass.attempted.is_empty(), "backed off: {pass:?}");
    assert!(
        handshake(tls_addr, &roots, "late.example.test")
            .await
            .is_err()
    );

    // A verified domain that resolves to us: pebble asks for the challenge on that host (an
    // app's host by now: the challenge comes before host routing) and the certificate is
    // served by SNI, from memory, without a restart.
    dns.add("shop.example.test.", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await;
    claim_and_verify(&server, &dns, &app, "shop.example.test").await;
    let pass = run_pass(&state).await;
    assert!(
        !pass.attempted.iter().any(|n| n == "claimed.example.test"),
        "{pass:?}"
    );
    let shop = status(&server, &app, "shop.example.test").await;
    assert_eq!(shop["sslStatus"], "active", "{shop}");
    assert_eq!(shop["issuer"], "acme");
    assert!(shop["sslError"].is_null());
    let tls = handshake(tls_addr, &roots, "shop.example.test")
        .await
        .unwrap();
    let first = leaf(&tls);
    let page = https_get(tls_addr, "/", &roots, "shop.example.test")
        .await
        .unwrap();
    assert!(page.contains("\"name\":\"Shop\""), "{page}");
    // A token no order put up is 404 in the envelope, on any host.
    let miss = server
        .get(
            "/.well-known/acme-challenge/nothing-here",
            &[("host", "shop.example.test")],
        )
        .await;
    miss.assert_error(404, "NOT_FOUND");

    // The late one, once its name resolves and its backoff is over.
    dns.add("late.example.test.", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await;
    server.clock.advance_millis(5 * 60_000);
    run_pass(&state).await;
    let late = status(&server, &app, "late.example.test").await;
    assert_eq!(late["sslStatus"], "active", "{late}");
    assert!(late["sslError"].is_null());
    assert!(
        handshake(tls_addr, &roots, "late.example.test")
            .await
            .is_ok()
    );

    // Renewal by the manual clock: nothing at half the lifetime, a new leaf past two thirds,
    // served at once.
    let stored = |state: &Arc<eliza_cloud::state::AppState>| {
        let cert = state
            .store
            .read(|txn| eliza_cloud::domains::certs::get_cert(txn, "shop.example.test"))
            .unwrap()
            .unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        assert_eq!(cert.acme_directory(), Some(pebble.directory.as_str()));
        (cert.not_before, cert.not_after)
    };
    let (not_before, not_after) = stored(&state);
    let life = not_after - not_before;
    server
        .clock
        .set(eliza_cloud::time::Timestamp(not_before + life / 2));
    let pass = run_pass(&state).await;
    assert!(pass.attempted.is_empty(), "{pass:?}");
    server.clock.set(eliza_cloud::time::Timestamp(
        not_before + life / 3 * 2 + 60_000,
    ));
    let pass = run_pass(&state).await;
    let tls = handshake(tls_addr, &roots, "shop.example.test")
        .await
        .unwrap();
    let renewed = leaf(&tls);
    assert_ne!(renewed, first, "renewed and served: {pass:?}");
    // Pebble dates certificates by the real clock: the new one's window starts now, so the
    // manual clock is put inside it to see that it is not renewed again.
    let (renewed_from, renewed_to) = stored(&state);
    assert!(renewed_from >= not_before && renewed_to - renewed_from == life);
    server
        .clock
        .set(eliza_cloud::time::Timestamp(renewed_from + life / 2));
    let pass = run_pass(&state).await;
    assert!(pass.attempted.is_empty(), "{pass:?}");

    // A restart: the account and certificates come from the database; nothing is ordered.
    crate::monetization::check_clean(&server);
    drop(state);
    server.restart().await;
    let state = server.running().state().clone();
    let tls_addr = server.running().tls_addr().unwrap();
    let pass = run_pass(&state).await;
    assert!(pass.attempted.is_empty(), "{pass:?}");
    let tls = handshake(tls_addr, &roots, "shop.example.test")
        .await
        .unwrap();
    assert_eq!(leaf(&tls), renewed);
    let accounts = state
        .store
        .read(|txn| {
            use redb::{ReadableTable, ReadableTableMetadata};
            let table = txn.open_table(eliza_cloud::store::tables::SECRETS)?;
            let _ = table.len()?;
            let mut n = 0;
            for row in table.iter()? {
                let (k, _) = row?;
                n += usize::from(k.value().starts_with("acme_account:"));
            }
            Ok::<_, eliza_cloud::store::StoreError>(n)
        })
        .unwrap();
    assert_eq!(accounts, 1, "one account, kept");

    // Deleting the domain: neither served nor queued.
    server
        .json_as(
            &owner,
            Method::DELETE,
            &format!("/api/v1/apps/{app}/domains"),
            json!({"domain": "shop.example.test"}),
        )
        .await
        .assert_status(StatusCode::OK);
    assert!(
        handshake(tls_addr, &roots, "shop.example.test")
            .await
            .is_err()
    );
    crate::monetization::check_clean(&server);
    drop(pebble);
}

/// The real binary with the flags an operator gives (`--acme-directory`, `--acme-email`,
/// `--acme-ca`, `--dns-resolver`, `--tls-listen`), at trace level: a verified domain gets its
/// certificate from pebble and is served; no key reaches the log.
#[tokio::test]
async fn the_binary_with_acme_flags_gets_a_certificate_and_logs_no_key() {
    let Some(binary) = pebble_binary() else {
        return;
    };
    let dns = Dns::start().await;
    let work = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let pebble = Pebble::start(&binary, work.path(), http_port, dns.addr).await;
    let root_file = work.path().join("pebble-tls-root.pem");
    std::fs::write(&root_file, &pebble.tls_root_pem).unwrap();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let key = eliza_cloud::auth::api_key::generate_key(eliza_cloud::store::keys::KeyType::Live);
    let key = key.expose().to_string();
    let data = work.path().join("data");
    let server = crate::support::Binary::serve_at(
        &format!("127.0.0.1:{http_port}"),
        &data,
        &[
            "--acme-directory",
            &pebble.directory,
            "--acme-email",
            "ops@example.test",
            "--acme-ca",
            root_file.to_str().unwrap(),
            "--dns-resolver",
            &dns.addr.to_string(),
            "--tls-listen",
            &tls_addr.to_string(),
            "--log-format",
            "json",
            "--log-level",
            "trace",
        ],
        &[("ELIZA_CLOUD_BOOTSTRAP_KEY", &key)],
    );
    let client = server.client();
    let send = |method: Method, path: String, body: serde_json::Value| {
        let client = &client;
        let key = key.clone();
        async move {
            client
                .request(
                    method,
                    &path,
                    &[("x-api-key", &key), ("content-type", "application/json")],
                    serde_json::to_vec(&body).unwrap(),
                )
                .await
        }
    };
    let app = send(
        Method::POST,
        "/api/v1/apps".into(),
        json!({"name": "Shop", "app_url": "https://s.example"}),
    )
    .await
    .json()["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let domains = format!("/api/v1/apps/{app}/domains");
    let claim = send(
        Method::POST,
        domains.clone(),
        json!({"domain": "bin.example.test"}),
    )
    .await
    .json();
    dns.set_txt(
        "_eliza-cloud-verify.bin.example.test.",
        claim["verificationRecord"]["value"].as_str().unwrap(),
    )
    .await;
    dns.add("bin.example.test.", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await;
    let verified = send(
        Method::POST,
        format!("{domains}/verify"),
        json!({"domain": "bin.example.test"}),
    )
    .await
    .json();
    assert_eq!(verified["verified"], true, "{verified}");
    // The orderer runs after the verify, in the server: wait for pebble's answer (bounded).
    let mut status = serde_json::Value::Null;
    for _ in 0..400 {
        status = send(
            Method::POST,
            format!("{domains}/status"),
            json!({"domain": "bin.example.test"}),
        )
        .await
        .json();
        if status["sslStatus"] != "pending" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["sslStatus"], "active", "{status}");
    assert_eq!(status["issuer"], "acme");
    let roots = pebble.issuing_root().await;
    let page = https_get(tls_addr, "/", &roots, "bin.example.test")
        .await
        .unwrap();
    assert!(page.contains("\"name\":\"Shop\""), "{page}");
    let (code, log) = server.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("ACME account registered"), "{log}");
    assert!(log.contains("certificate issued by the ACME CA"), "{log}");
    // (The TXT token is no secret: it is published in DNS, and the resolver logs its answers at
    // debug level.)
    for secret in ["PRIVATE KEY", "BEGIN", "key_pkcs8", &key] {
        let line = log.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret:?} in the log: {line:?}");
    }
}
