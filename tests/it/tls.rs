//! The TLS listener (SPEC §11, `local` issuer): rustls clients that trust the exported CA shake
//! hands for an app subdomain (the wildcard), the public host and a verified custom domain, by
//! SNI, with HTTP/2 or HTTP/1.1 by ALPN; an unknown name's handshake is refused; certificates
//! change without a restart and survive one without a reissue.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::dns::Dns;
use crate::support::{TestServer, run_cli};

/// The client checks validity at the server's manual clock, so certificates issued "at" the
/// test's fixed date verify whatever the real date is.
#[derive(Debug)]
struct AtClock(Arc<eliza_cloud::time::ManualClock>);

impl rustls::time_provider::TimeProvider for AtClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        let secs = u64::try_from(self.0.now_millis() / 1000).ok()?;
        Some(rustls::pki_types::UnixTime::since_unix_epoch(
            std::time::Duration::from_secs(secs),
        ))
    }
}

/// What a client trusts: the exported CA, at the server's clock.
struct Trust {
    pem: String,
    clock: Arc<eliza_cloud::time::ManualClock>,
}

fn client(trust: &Trust, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trust.pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_details(
        Arc::new(rustls::crypto::ring::default_provider()),
        Arc::new(AtClock(trust.clock.clone())),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(
    addr: SocketAddr,
    ca: &Trust,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    client(ca, alpn)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 GET over an established TLS stream; answers the raw response.
async fn get(mut tls: Tls, host: &str, path: &str) -> String {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn leaf(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn sni_picks_the_certificate_and_an_unknown_name_is_refused() {
    let dns = Dns::start().await;
    let mut server = TestServer::start_with({
        let addr = dns.addr;
        move |c| {
            c.apps.dns_resolver = Some(addr);
            c.apps.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
    })
    .await;
    let tls_addr = server.running().tls_addr().unwrap();
    let ca = server.get("/api/v1/ca.pem", &[]).await;
    ca.assert_status(StatusCode::OK);
    let pem = String::from_utf8(ca.body.to_vec()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(!pem.contains("PRIVATE"));
    let ca = Trust {
        pem,
        clock: server.clock.clone(),
    };

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

    // The wildcard, with HTTP/2 offered and chosen, and HTTP/1.1 on the same name.
    let h2 = handshake(tls_addr, &ca, "shop.apps.localhost", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = handshake(tls_addr, &ca, "shop.apps.localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let wildcard = leaf(&h1);
    let answer = get(h1, "shop.apps.localhost", "/").await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("\"name\":\"Shop\""),
        "{answer}"
    );
    // The public URL's host gets the API.
    let api = handshake(tls_addr, &ca, "localhost", &[b"http/1.1"])
        .await
        .unwrap();
    let answer = get(api, "localhost:3000", "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Unknown names: no certificate, no handshake.
    for name in ["unknown.example", "a.b.apps.localhost"] {
        assert!(handshake(tls_addr, &ca, name, &[]).await.is_err(), "{name}");
    }

    // A custom domain: refused until verified, served after, refused again once deleted.
    let domains = format!("/api/v1/apps/{app}/domains");
    let claim = server
        .json_as(
            &owner,
            Method::POST,
            &domains,
            json!({"domain": "shop.example.test"}),
        )
        .await
        .json();
    assert!(
        handshake(tls_addr, &ca, "shop.example.test", &[])
            .await
            .is_err()
    );
    dns.set_txt(
        "_eliza-cloud-verify.shop.example.test.",
        claim["verificationRecord"]["value"].as_str().unwrap(),
    )
    .await;
    let v = server
        .json_as(
            &owner,
            Method::POST,
            &format!("{domains}/verify"),
            json!({"domain": "shop.example.test"}),
        )
        .await
        .json();
    assert_eq!(v["verified"], true);
    let custom = handshake(tls_addr, &ca, "shop.example.test", &[b"http/1.1"])
        .await
        .unwrap();
    let custom_leaf = leaf(&custom);
    assert!(
        get(custom, "shop.example.test", "/")
            .await
            .contains("\"name\":\"Shop\"")
    );
    let status = server
        .json_as(
            &owner,
            Method::POST,
            &format!("{domains}/status"),
            json!({"domain": "shop.example.test"}),
        )
        .await
        .json();
    assert_eq!(status["sslStatus"], "active");
    assert_eq!(status["issuer"], "local");
    assert!(status["sslExpiresAt"].is_string());

    // A restart serves the same certificates: nothing is reissued.
    server.restart().await;
    let tls_addr = server.running().tls_addr().unwrap();
    let again = handshake(tls_addr, &ca, "x.apps.localhost", &[])
        .await
        .unwrap();
    assert_eq!(leaf(&again), wildcard);
    let again = handshake(tls_addr, &ca, "shop.example.test", &[])
        .await
        .unwrap();
    assert_eq!(leaf(&again), custom_leaf);
    server
        .json_as(
            &owner,
            Method::DELETE,
            &domains,
            json!({"domain": "shop.example.test"}),
        )
        .await
        .assert_status(StatusCode::OK);
    assert!(
        handshake(tls_addr, &ca, "shop.example.test", &[])
            .await
            .is_err()
    );
    crate::monetization::check_clean(&server);

    // `ca export` prints the same CA (the server stopped: the command reads the file).
    server.stop().await;
    let data = server.config.data_dir.to_str().unwrap().to_string();
    let (code, out, err) = run_cli(&["ca", "export", "--data", &data], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, ca.pem);
}

#[tokio::test]
async fn local_certificates_are_renewed_at_two_thirds_of_their_lifetime_without_a_restart() {
    let server = TestServer::start_with(|c| {
        c.apps.tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let tls_addr = server.running().tls_addr().unwrap();
    let state = server.running().state().clone();
    let pem = String::from_utf8(server.get("/api/v1/ca.pem", &[]).await.body.to_vec()).unwrap();
    let ca = Trust {
        pem,
        clock: server.clock.clone(),
    };
    let served = || async {
        let tls = handshake(tls_addr, &ca, "any.apps.localhost", &[])
            .await
            .unwrap();
        leaf(&tls)
    };
    let first = served().await;
    // Leaves live 398 days: nothing at 200, renewed past 265.
    const DAY: i64 = 86_400_000;
    server.clock.advance_millis(200 * DAY);
    assert_eq!(eliza_cloud::server::renew_certificates(&state).await, 0);
    assert_eq!(served().await, first);
    server.clock.advance_millis(70 * DAY);
    // The wildcard and the public host's.
    assert_eq!(eliza_cloud::server::renew_certificates(&state).await, 2);
    let second = served().await;
    assert_ne!(second, first, "the new leaf is served at once");
    assert_eq!(eliza_cloud::server::renew_certificates(&state).await, 0);
    crate::monetization::check_clean(&server);
}
