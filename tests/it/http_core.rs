//! The HTTP core over real sockets: envelopes, request ids, caps, timeouts, CORS, h2c, the
//! connection cap, drain, and the operations endpoints.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::support::TestServer;

/// Reads from a raw socket until the peer closes or `limit` passes; answers what arrived.
async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn healthz_readyz_and_request_ids() {
    let server = TestServer::start().await;
    let r = server.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let id = r.header("x-request-id").unwrap();
    assert!(id.starts_with("req_") && id.len() == 36, "{id}");

    let r = server
        .get("/readyz", &[("x-request-id", "trace-42.a:b")])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ready");
    assert_eq!(r.header("x-request-id"), Some("trace-42.a:b"));

    // An insane caller id is replaced, not echoed.
    let r = server
        .get("/healthz", &[("x-request-id", "<script>")])
        .await;
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_use_the_envelope() {
    let server = TestServer::start().await;
    // The catch-all (SPEC §2): an unknown path is 401 without a credential and 404 to any valid
    // credential, restricted or not (a restricted key is never told to widen itself).
    let key = server.operator_key.clone();
    let r = server
        .get("/api/v1/does-not-exist", &[("x-api-key", &key)])
        .await;
    r.assert_error(404, "NOT_FOUND");
    let r = server
        .get(
            "/nope",
            &[
                ("x-request-id", "mine-1"),
                ("authorization", &format!("Bearer {key}")),
            ],
        )
        .await;
    let error = r.assert_error(404, "NOT_FOUND");
    assert_eq!(error["requestId"], "mine-1");
    let r = server.get("/api/v1/does-not-exist", &[]).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(r.header("www-authenticate").is_some());
    let r = server.get("/api/v1/api-keys/extra/deep", &[]).await;
    r.assert_error(401, "UNAUTHORIZED");
    let (_, restricted, _) = server
        .create_key(json!({"name": "r", "permissions": ["chat"]}))
        .await;
    let r = server
        .get("/api/v1/does-not-exist", &[("x-api-key", &restricted)])
        .await;
    let error = r.assert_error(404, "NOT_FOUND");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["param"].is_null());
    assert!(error.get("details").is_none(), "{error}");

    let r = server
        .request(Method::POST, "/healthz", &[], Bytes::from_static(b"{}"))
        .await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = server
        .request(Method::DELETE, "/api/v1/auth/whoami", &[], Bytes::new())
        .await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn head_answers_without_a_body() {
    let server = TestServer::start().await;
    let r = server
        .request(Method::HEAD, "/healthz", &[], Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn oversized_body_is_413_from_its_declared_length() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    // Declares 64 MiB and sends none of it: the answer must come without reading a body.
    stream
        .write_all(
            b"POST /api/v1/auth/whoami HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 67108864\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("413 arrives without the body being sent")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("PAYLOAD_TOO_LARGE"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("x-request-id: "),
        "{text}"
    );

    // Exactly at the cap is not refused for size (the route then answers for itself).
    let body = vec![b'a'; server.config.max_body_bytes];
    let r = server
        .request(Method::GET, "/api/v1/auth/whoami", &[], body)
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    let body = vec![b'a'; server.config.max_body_bytes + 1];
    let r = server
        .request(Method::GET, "/api/v1/auth/whoami", &[], body)
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let server = TestServer::start().await;
    let r = server
        .request(
            Method::OPTIONS,
            "/api/v1/auth/whoami",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-api-key"),
            ],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-api-key",
        "authorization",
        "x-wallet-address",
        "x-timestamp",
        "x-wallet-signature",
        "x-payment",
        "payment-signature",
    ] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("PATCH")
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    assert!(r.header("x-request-id").is_some());

    // Ordinary API answers to a cross-origin request carry the CORS origin too, never
    // credentials; a request without `Origin` (not from a browser page) gets none of it.
    let r = server
        .get("/api/v1/auth/whoami", &[("origin", "https://app.example")])
        .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(
        r.header("access-control-expose-headers")
            .unwrap()
            .contains("PAYMENT-REQUIRED")
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    let r = server.get("/api/v1/auth/whoami", &[]).await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-expose-headers").is_none());
}

#[tokio::test]
async fn whoami_needs_a_valid_credential() {
    let server = TestServer::start().await;
    let r = server.get("/api/v1/auth/whoami", &[]).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"eliza-cloud\"")
    );
    let bearer = format!("Bearer {}", server.operator_key);
    for headers in [
        vec![("authorization", bearer.as_str())],
        vec![("x-api-key", server.operator_key.as_str())],
    ] {
        let r = server.get("/api/v1/auth/whoami", &headers).await;
        assert_eq!(r.status, StatusCode::OK);
        let json = r.json();
        assert_eq!(json["authMethod"], "api_key");
        assert_eq!(json["organization"]["slug"], "operator");
        assert_eq!(json["user"]["role"], "owner");
        assert_eq!(json["apiKey"]["type"], "live");
        assert_eq!(json["apiKey"]["key_prefix"], &server.operator_key[..12]);
        assert!(!r.json().to_string().contains(&server.operator_key));
    }
    // Present but bad: never a fall-through to the good Authorization header.
    let mut changed = server.operator_key.clone().into_bytes();
    changed[20] = if changed[20] == b'a' { b'b' } else { b'a' };
    let changed = String::from_utf8(changed).unwrap();
    for headers in [
        vec![
            ("x-api-key", changed.as_str()),
            ("authorization", bearer.as_str()),
        ],
        vec![("x-api-key", ""), ("authorization", bearer.as_str())],
        vec![("authorization", "Basic dXNlcjpwYXNz")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer eliza_0123456789abcdef")],
    ] {
        let r = server.get("/api/v1/auth/whoami", &headers).await;
        r.assert_error(401, "UNAUTHORIZED");
        assert_eq!(
            r.json()["error"]["message"],
            "Invalid or missing authentication"
        );
    }
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(metrics.contains("reason=\"malformed_key\""), "{metrics}");
    assert!(metrics.contains("reason=\"unknown_key\""), "{metrics}");
    assert!(
        metrics.contains("reason=\"authorization_not_bearer\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = TestServer::start().await;
    server.get("/healthz", &[]).await;
    server.get("/healthz", &[]).await;
    let key = server.operator_key.clone();
    server.get("/missing", &[("x-api-key", &key)]).await;
    let r = server.get("/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.contains("eliza_http_requests_total{route=\"healthz\",status=\"200\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("eliza_http_requests_total{route=\"not_found\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE eliza_http_request_duration_seconds histogram"));
    assert!(
        text.contains("eliza_http_request_duration_seconds_count 3"),
        "{text}"
    );
    assert!(text.contains("eliza_rate_limited_total 0"));
    assert!(text.contains("eliza_credits_charged_micros_total 0"));
    // Every sample line is `name{labels} value` or `name value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let server = TestServer::start().await;
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .uri(format!("http://{}/healthz", server.addr()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"status":"ok"}"#);
}

#[tokio::test]
async fn slow_or_silent_clients_are_cut_off_at_the_header_deadline() {
    let server = TestServer::start_with(|c| c.header_timeout = Duration::from_millis(300)).await;
    // Sends half a request head and stalls.
    let mut partial = TcpStream::connect(server.addr()).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Sends nothing at all.
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let (text, closed) = read_until_close(&mut partial, Duration::from_secs(10)).await;
    assert!(closed, "a stalled head must be cut off");
    assert!(!text.contains("200 OK"), "{text}");
    let (_, closed) = read_until_close(&mut silent, Duration::from_secs(10)).await;
    assert!(closed, "a silent connection must be cut off");
    // The server still serves others.
    assert_eq!(server.get("/healthz", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_stalled_body_is_answered_408_and_the_connection_closed() {
    let server = TestServer::start_with(|c| c.body_timeout = Duration::from_millis(300)).await;
    // A wallet header makes the server read the body before authenticating; a body route reads
    // it after. Both promise 1000 bytes and send 3.
    for head in [
        "GET /api/v1/auth/whoami HTTP/1.1\r\nHost: x\r\nX-Wallet-Address: 0x1\r\n\
         X-Timestamp: 1\r\nX-Wallet-Signature: 0x1\r\n",
        "POST /api/auth/siwe/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
    ] {
        let mut stream = TcpStream::connect(server.addr()).await.unwrap();
        let request = format!("{head}Content-Length: 1000\r\n\r\nabc");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (text, closed) = read_until_close(&mut stream, Duration::from_secs(10)).await;
        assert!(
            closed,
            "a stalled body must not hold the connection: {head}"
        );
        assert!(text.starts_with("HTTP/1.1 408"), "{head}: {text}");
        assert!(text.contains("REQUEST_TIMEOUT"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("x-request-id: "),
            "{text}"
        );
    }
    assert_eq!(server.get("/healthz", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_connection_cap_holds_extra_connections_back() {
    let server = TestServer::start_with(|c| c.max_connections = 1).await;
    // Connection A takes the only slot and stays open (keep-alive).
    let mut a = TcpStream::connect(server.addr()).await.unwrap();
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Connection B is accepted by the kernel but not served while A holds the slot.
    let mut b = TcpStream::connect(server.addr()).await.unwrap();
    b.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(400), b.read(&mut buf)).await;
    assert!(waited.is_err(), "B must wait while A holds the only slot");
    drop(a);
    let (text, closed) = read_until_close(&mut b, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_meets_its_deadline() {
    let mut server = TestServer::start_with(|c| {
        c.shutdown_timeout = Duration::from_millis(300);
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = server.addr();
    // An idle keep-alive connection after one request.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let _ = idle.read(&mut buf).await.unwrap();
    // A connection stuck mid-head, which only the drain deadline ends.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("shutdown finishes within its deadline");
    let (_, closed) = read_until_close(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "idle connections are closed at shutdown");
    let (_, closed) = read_until_close(&mut stuck, Duration::from_secs(5)).await;
    assert!(closed, "stuck connections are closed at the deadline");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn idle_connections_of_either_protocol_are_closed() {
    // A header timeout longer than the idle timeout, so HTTP/1.1 is closed by the idle rule too.
    let server = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_millis(300);
        c.header_timeout = Duration::from_secs(30);
    })
    .await;
    // h2c: the client answers the server's pings, so only an idle timeout ends the connection.
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get("http://x/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let _ = response.into_body().collect().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle h2c connection stayed open");
    // HTTP/1.1 keep-alive: served, then closed once idle.
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "an idle HTTP/1.1 connection stayed open");
}

/// Connects from `local` (a loopback address of this machine) and sends one request; answers
/// the stream (kept open) and whether it was answered.
async fn served_from(server: &TestServer, local: [u8; 4]) -> (TcpStream, bool) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((local, 0))).unwrap();
    let mut stream = socket.connect(server.addr()).await.unwrap();
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 12];
    let answered = matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if buf.starts_with(b"HTTP/1.1 200")
    );
    (stream, answered)
}

#[tokio::test]
async fn one_client_address_cannot_hold_every_connection() {
    let server = TestServer::start_with(|c| c.max_connections_per_address = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (stream, answered) = served_from(&server, [127, 0, 0, 1]).await;
        assert!(answered);
        held.push(stream);
    }
    // The fourth from that address is closed unanswered; another address is served.
    let (_, answered) = served_from(&server, [127, 0, 0, 1]).await;
    assert!(!answered, "a fourth connection from one address was served");
    let (_other, answered) = served_from(&server, [127, 0, 0, 2]).await;
    assert!(answered, "another address was locked out");
    let metrics = String::from_utf8(server.get_from_other_address().await).unwrap();
    assert!(
        metrics.contains("eliza_connections_refused_per_address_total 1"),
        "{metrics}"
    );
    // A connection given back makes room again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_s, answered) = served_from(&server, [127, 0, 0, 1]).await;
        if answered {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}
