//! HTTPS by SNI with 10,000 custom domains configured (SPEC §11, issue 14): `eliza-cloud serve`
//! (its own process, `--tls-listen`) holds 10,000 verified domains of one app, each with its own
//! certificate from the local CA; one client (this process, rustls with the exported CA, tokio)
//! measures in the same run:
//!
//! - TLS handshakes per second for one of the custom domains (a new TCP connection and a full
//!   handshake each, then closed), and for comparison new plain connections with one request;
//! - the steady-state request rate of `GET /` (the app's public page) on 32 kept-alive
//!   connections, over HTTPS for the custom domain and over the plain listener.
//!
//! Run: `cargo bench --bench tls` (LOAD_SECONDS, default 3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use uuid::Uuid;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::StoreError;
use eliza_cloud::store::apps::{AppRecord, insert_app};
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, insert_key};
use eliza_cloud::time::{Clock, SystemClock};
use support::{Process, env_num};

const DOMAINS: usize = 10_000;
const PROBE: &str = "d5000.bench.example";

/// The operator, one app, and 10,000 verified domains of it with their certificates.
fn prepare(data: &Path) {
    let key = generate_key(KeyType::Live);
    let app_plain = generate_key(KeyType::Live);
    let store = eliza_cloud::store::Store::open(data).unwrap();
    let now = SystemClock.now().millis();
    eliza_cloud::bootstrap::ensure_operator(&store, Some(&key), SystemClock.now()).unwrap();
    store
        .write(|txn| {
            let org = eliza_cloud::store::orgs::get_org_by_slug(txn, "operator")?.unwrap();
            let user = eliza_cloud::store::users::owner_of_org(txn, org.id)?.unwrap();
            let app_id = Uuid::new_v4();
            let mut app_key = ApiKeyRecord::fresh(
                org.id,
                user.id,
                "App: bench".into(),
                KeyType::Live,
                app_plain.display_prefix(),
                app_plain.hash(),
                now,
            );
            app_key.app_id = Some(app_id);
            insert_key(txn, &app_key)?;
            insert_app(
                txn,
                &AppRecord {
                    id: app_id,
                    organization_id: org.id,
                    created_by: user.id,
                    name: "bench".into(),
                    slug: "bench".into(),
                    subdomain: "bench".into(),
                    app_url: "https://bench.example".into(),
                    description: Some("TLS bench".into()),
                    website_url: None,
                    logo_url: None,
                    allowed_origins: vec![],
                    permissions: vec!["chat".into()],
                    rate_limit: 600,
                    is_active: true,
                    key_id: app_key.id,
                    monetization_enabled: false,
                    per_request_micros: 0,
                    per_token_micros: 0,
                    created_at: now,
                    updated_at: now,
                },
            )?;
            for n in 0..DOMAINS {
                let name = format!("d{n}.bench.example");
                eliza_cloud::store::domains::add_claim(txn, app_id, org.id, &name, now)
                    .map_err(|e| StoreError::Db(format!("{e:?}")))?;
                eliza_cloud::store::domains::mark_verified(txn, app_id, &name, now)?;
                eliza_cloud::domains::certs::ensure_local(txn, &name, &[], now)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn get_ca(addr: SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/api/v1/ca.pem")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let body = sender.send_request(req).await.unwrap().into_body();
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Runs `work` on `tasks` tasks for `seconds`; answers completions per second.
async fn rate<F, Fut>(tasks: usize, seconds: u64, work: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let work = work.clone();
        let done = done.clone();
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                done.fetch_add(work().await, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

/// One request on a new connection.
async fn one<S>(stream: S) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", PROBE)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    1
}

/// Requests on one kept-alive connection until the deadline; answers how many.
async fn keep_alive<S>(stream: S, host: &'static str, deadline: Instant) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut n = 0;
    while Instant::now() < deadline {
        let req = http::Request::get("/")
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await;
        n += 1;
    }
    n
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let seconds = env_num("LOAD_SECONDS", 3);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let started = Instant::now();
    prepare(&data);
    println!(
        "{DOMAINS} verified domains with their certificates prepared in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_port();
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(env!("CARGO_BIN_EXE_eliza-cloud"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .args(["--tls-listen", &tls_addr.to_string()])
        .arg("--data")
        .arg(&data);
    for (name, _) in std::env::vars() {
        if name.starts_with("ELIZA_CLOUD_") {
            command.env_remove(name);
        }
    }
    let server = Process::spawn(command);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let plain = server.addr;
        let ca = get_ca(plain).await;
        let tls = connector(&ca);
        // Wait until the TLS listener answers.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(tls_addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let name = ServerName::try_from(PROBE.to_string()).unwrap();
        let handshakes = {
            let tls = tls.clone();
            let name = name.clone();
            rate(8, seconds, move || {
                let tls = tls.clone();
                let name = name.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
                    let _ = tls.connect(name, tcp).await.unwrap();
                    1
                }
            })
            .await
        };
        let tls_connects = {
            let tls = tls.clone();
            let name = name.clone();
            rate(8, seconds, move || {
                let tls = tls.clone();
                let name = name.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
                    one(tls.connect(name, tcp).await.unwrap()).await
                }
            })
            .await
        };
        let plain_connects = rate(8, seconds, move || async move {
            one(tokio::net::TcpStream::connect(plain).await.unwrap()).await
        })
        .await;
        println!("new connections (8 at a time, {seconds} s):");
        println!("  TLS handshakes for {PROBE}      : {handshakes:>8.0} /s");
        println!("  TLS connection + one request       : {tls_connects:>8.0} /s");
        println!("  plain connection + one request     : {plain_connects:>8.0} /s");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut https = Vec::new();
        for _ in 0..32 {
            let tls = tls.clone();
            let name = name.clone();
            https.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
                let stream = tls.connect(name, tcp).await.unwrap();
                keep_alive(stream, PROBE, deadline).await
            }));
        }
        let mut total = 0;
        for h in https {
            total += h.await.unwrap();
        }
        let https_rate = total as f64 / seconds as f64;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut plains = Vec::new();
        for _ in 0..32 {
            plains.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
                keep_alive(tcp, PROBE, deadline).await
            }));
        }
        let mut total = 0;
        for h in plains {
            total += h.await.unwrap();
        }
        let plain_rate = total as f64 / seconds as f64;
        println!("steady state, 32 kept-alive connections, GET / of the app (its public page):");
        println!("  HTTPS for {PROBE}               : {https_rate:>8.0} req/s");
        println!("  plain listener, same Host          : {plain_rate:>8.0} req/s");
        println!(
            "  HTTPS / plain                      : {:.3}",
            https_rate / plain_rate
        );
        println!("  server RSS after: {} KiB", server.rss_kib());
    });
}
