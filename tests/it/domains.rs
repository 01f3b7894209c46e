//! App domains over real HTTP (SPEC §11, the part built so far): subdomains routed by `Host`,
//! custom domains claimed with a TXT token and verified through a real DNS server (`dns.rs`) that
//! serves, changes and removes the record, the `allowed` check a front proxy asks, and release on
//! delete.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::dns::Dns;
use crate::signin::{EvmWallet, siwe_sign_in};
use crate::support::{TestResponse, TestServer};

async fn on_host(server: &TestServer, host: &str, path: &str, accept: &str) -> TestResponse {
    server
        .request(Method::GET, path, &[("host", host), ("accept", accept)], "")
        .await
}

async fn allowed(server: &TestServer, domain: &str) -> u16 {
    server
        .get(&format!("/api/v1/domains/allowed?domain={domain}"), &[])
        .await
        .status
        .as_u16()
}

async fn domains(
    server: &TestServer,
    key: &str,
    app: &str,
    method: Method,
    path: &str,
    body: Value,
) -> TestResponse {
    server
        .json_as(
            key,
            method,
            &format!("/api/v1/apps/{app}/domains{path}"),
            body,
        )
        .await
}

#[tokio::test]
async fn subdomains_and_verified_domains_are_served_and_released() {
    let dns = Dns::start().await;
    let server = TestServer::start_with({
        let addr = dns.addr;
        move |c| c.apps.dns_resolver = Some(addr)
    })
    .await;
    let owner = server.operator_key.clone();
    let r = server
        .json_as(
            &owner,
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Shop <b>", "app_url": "https://shop.example", "description": "We sell & ship"}),
        )
        .await;
    r.assert_status(StatusCode::OK);
    let app = r.json()["app"]["id"].as_str().unwrap().to_string();
    let app_key = r.json()["apiKey"].as_str().unwrap().to_string();
    assert_eq!(r.json()["app"]["subdomain"], "shop-b");

    // The subdomain answers the app's public page, JSON or HTML; nothing else there.
    let page = on_host(
        &server,
        "Shop-B.apps.localhost:3000",
        "/",
        "application/json",
    )
    .await;
    page.assert_status(StatusCode::OK);
    assert_eq!(page.json()["name"], "Shop <b>");
    assert_eq!(page.json()["id"], app.as_str());
    let html = on_host(&server, "shop-b.apps.localhost", "/", "text/html,*/*").await;
    let text = String::from_utf8_lossy(&html.body).to_string();
    assert!(
        html.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        text.contains("Shop &lt;b&gt;") && text.contains("We sell &amp; ship"),
        "{text}"
    );
    on_host(
        &server,
        "shop-b.apps.localhost",
        "/api/v1/auth/whoami",
        "*/*",
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert_eq!(allowed(&server, "shop-b.apps.localhost").await, 200);
    assert_eq!(
        allowed(&server, "localhost").await,
        200,
        "the public URL's host"
    );
    assert_eq!(allowed(&server, "nobody.apps.localhost").await, 404);
    assert_eq!(allowed(&server, "").await, 404);

    // A custom domain: validated, claimed with a token.
    for bad in [
        "localhost",
        "x.apps.localhost",
        "xn--mnchen-3ya.de",
        "1.2.3.4",
        "a..b",
        "bad_name.test",
    ] {
        domains(
            &server,
            &owner,
            &app,
            Method::POST,
            "",
            json!({"domain": bad}),
        )
        .await
        .assert_error(400, "VALIDATION_ERROR");
    }
    let claim = domains(
        &server,
        &owner,
        &app,
        Method::POST,
        "",
        json!({"domain": "Shop.Example.TEST"}),
    )
    .await;
    claim.assert_status(StatusCode::CREATED);
    let c = claim.json();
    assert_eq!(c["domain"], "shop.example.test");
    assert_eq!(c["verified"], false);
    assert_eq!(c["verificationRecord"]["type"], "TXT");
    assert_eq!(
        c["verificationRecord"]["name"],
        "_eliza-cloud-verify.shop.example.test"
    );
    let token = c["verificationRecord"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        token.starts_with("eliza-verify-") && token.len() == 13 + 32,
        "{token}"
    );
    assert!(c["dnsInstructions"].as_array().unwrap().len() >= 2);
    // Claimed again: the same token.
    let again = domains(
        &server,
        &owner,
        &app,
        Method::POST,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await;
    assert_eq!(again.json()["verificationRecord"]["value"], token.as_str());
    // Another organization may claim it too, with its own token.
    let stranger = siwe_sign_in(&server, &EvmWallet::new()).await.json()["apiKey"]
        .as_str()
        .unwrap()
        .to_string();
    let theirs = server
        .json_as(
            &stranger,
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Rival", "app_url": "https://r.example"}),
        )
        .await
        .json()["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rival = domains(
        &server,
        &stranger,
        &theirs,
        Method::POST,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await;
    rival.assert_status(StatusCode::CREATED);
    assert_ne!(rival.json()["verificationRecord"]["value"], token.as_str());
    // Neither the app's key nor another organization reaches these routes.
    domains(&server, &app_key, &app, Method::GET, "", json!({}))
        .await
        .assert_error(403, "FORBIDDEN");
    domains(&server, &stranger, &app, Method::GET, "", json!({}))
        .await
        .assert_error(404, "NOT_FOUND");

    // Verify: no record, a wrong record, then the right one.
    let verify = || {
        domains(
            &server,
            &owner,
            &app,
            Method::POST,
            "/verify",
            json!({"domain": "shop.example.test"}),
        )
    };
    let v = verify().await;
    v.assert_status(StatusCode::OK);
    assert_eq!(v.json()["verified"], false);
    assert!(
        v.json()["error"]
            .as_str()
            .unwrap()
            .contains("no TXT record"),
        "{}",
        v.json()
    );
    dns.set_txt(
        "_eliza-cloud-verify.shop.example.test.",
        "eliza-verify-wrong",
    )
    .await;
    let v = verify().await.json();
    assert_eq!(v["verified"], false);
    assert!(
        v["error"].as_str().unwrap().contains("eliza-verify-wrong"),
        "{v}"
    );
    assert_eq!(allowed(&server, "shop.example.test").await, 404);
    dns.set_txt("_eliza-cloud-verify.shop.example.test.", &token)
        .await;
    assert_eq!(verify().await.json()["verified"], true);
    // Served on the next request; the rival's claim is gone and it cannot claim again.
    assert_eq!(allowed(&server, "shop.example.test").await, 200);
    // Its certificate was issued with it: `check` finds every verified domain's.
    crate::monetization::check_clean(&server);
    assert_eq!(
        on_host(&server, "shop.example.test", "/", "*/*")
            .await
            .json()["name"],
        "Shop <b>"
    );
    let listed = domains(&server, &stranger, &theirs, Method::GET, "", json!({}))
        .await
        .json();
    assert_eq!(listed["domains"], json!([]));
    domains(
        &server,
        &stranger,
        &theirs,
        Method::POST,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await
    .assert_error(409, "CONFLICT");
    // The record may go: the domain stays verified.
    dns.remove(
        "_eliza-cloud-verify.shop.example.test.",
        hickory_proto::rr::RecordType::TXT,
    )
    .await;
    let status = domains(
        &server,
        &owner,
        &app,
        Method::POST,
        "/status",
        json!({"domain": "shop.example.test"}),
    )
    .await;
    assert_eq!(status.json()["verified"], true);
    assert_eq!(verify().await.json()["verified"], true);
    let listed = domains(&server, &owner, &app, Method::GET, "", json!({}))
        .await
        .json();
    assert_eq!(listed["domains"][0]["verified"], true);

    // Delete: neither allowed nor served any more, and free for others.
    domains(
        &server,
        &owner,
        &app,
        Method::DELETE,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(allowed(&server, "shop.example.test").await, 404);
    // Released: the host gets the API again, whose `/` is the dashboard's door.
    let released = on_host(&server, "shop.example.test", "/", "*/*").await;
    released.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(released.header("location"), Some("/dashboard"));
    domains(
        &server,
        &stranger,
        &theirs,
        Method::POST,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await
    .assert_status(StatusCode::CREATED);
    domains(
        &server,
        &owner,
        &app,
        Method::DELETE,
        "",
        json!({"domain": "shop.example.test"}),
    )
    .await
    .assert_error(404, "NOT_FOUND");

    // Deleting the app releases its subdomain.
    server
        .request(
            Method::DELETE,
            &format!("/api/v1/apps/{app}"),
            &[("x-api-key", &owner)],
            "",
        )
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(allowed(&server, "shop-b.apps.localhost").await, 404);
    crate::monetization::check_clean(&server);
}
