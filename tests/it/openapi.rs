//! `GET /api/openapi.json` (SPEC §14) over HTTP: public, OpenAPI 3.1, one operation per route.

use http::StatusCode;

use crate::support::TestServer;

#[tokio::test]
async fn the_document_is_served_without_a_credential() {
    // Configured so that no route is 5xx by configuration (SPEC §14): x402 on, trusting signatures.
    let server = TestServer::start_with(|c| {
        c.x402 = crate::topup::x402(eliza_cloud::x402::Settlement::TrustSignature);
    })
    .await;
    let r = server.get("/api/openapi.json", &[]).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "http://localhost:3000");
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(operations, eliza_cloud::api::openapi::OPERATIONS.len());
    // Each operation's path and method reach a route that answers something other than the
    // router's own 404 or 405 (a credential-less call may be 401, 402 or 400: never 404/405
    // for a documented path; dashboard pages redirect).
    for o in eliza_cloud::api::openapi::OPERATIONS {
        let path = o
            .path
            .replace("{id}", "7f0c3e5e-6f36-4c39-9b7e-2f1a7c3d9e10")
            .replace("{key}", "0b8f7f6e-1d2c-4b3a-8e9f-0a1b2c3d4e5f")
            .replace("{delivery}", "msg_00")
            .replace("{amount}", "10")
            .replace("{model}", "gpt-4o-mini")
            .replace("{token}", "abc")
            .replace("{page}", "keys");
        let method = http::Method::from_bytes(o.method.to_uppercase().as_bytes()).unwrap();
        let r = server
            .request(method, &path, &[], bytes::Bytes::new())
            .await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {path}",
            o.method
        );
        assert!(r.status.as_u16() < 500, "{} {path}: {}", o.method, r.status);
    }
}
