//! The web dashboard (SPEC §13) over real HTTP: the key-for-session exchange and its rules, the
//! session bound to its key, every page, the forms (a key and an app key shown once, revoke,
//! monetization with an error next to its field), the CSRF rule, and an app key refused.

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestResponse, TestServer};

const ORIGIN: &str = "http://localhost:3000";

fn cookie_of(r: &TestResponse) -> String {
    let set = r.header("set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

fn html(r: &TestResponse) -> String {
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        r.header("content-type")
    );
    String::from_utf8(r.body.to_vec()).unwrap()
}

async fn page(server: &TestServer, cookie: &str, path: &str) -> TestResponse {
    server.get(path, &[("cookie", cookie)]).await
}

async fn post_form(server: &TestServer, cookie: &str, path: &str, form: &str) -> TestResponse {
    server
        .request(
            Method::POST,
            path,
            &[
                ("cookie", cookie),
                ("origin", ORIGIN),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            form.to_string(),
        )
        .await
}

async fn exchange(server: &TestServer, key: &str) -> TestResponse {
    server
        .request(
            Method::POST,
            "/api/auth/key-session",
            &[("content-type", "application/json")],
            json!({ "apiKey": key }).to_string(),
        )
        .await
}

#[tokio::test]
async fn only_an_unrestricted_live_key_is_exchanged_and_the_session_lives_with_it() {
    let server = TestServer::start().await;
    let (key_id, key, _) = server.create_key(json!({"name": "browser"})).await;
    let answer = exchange(&server, &key).await;
    answer.assert_status(StatusCode::OK);
    assert_eq!(answer.json()["success"], true);
    let cookie = cookie_of(&answer);
    assert!(!String::from_utf8_lossy(&answer.body).contains(&key));
    let who = server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await;
    who.assert_status(StatusCode::OK);
    assert_eq!(who.json()["authMethod"], "session");

    // Refused: a test key, a restricted key, an app's key (403); an unknown key (401); from
    // another origin (403).
    let (_, test_key, _) = server
        .create_key(json!({"name": "t", "type": "test"}))
        .await;
    let (_, restricted, _) = server
        .create_key(json!({"name": "r", "permissions": ["chat"]}))
        .await;
    let app = server
        .operator_json(
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Shop", "app_url": "https://s.example"}),
        )
        .await
        .json();
    let app_key = app["apiKey"].as_str().unwrap().to_string();
    for refused in [&test_key, &restricted, &app_key] {
        exchange(&server, refused)
            .await
            .assert_error(403, "FORBIDDEN");
    }
    exchange(&server, "ek_live_notakey")
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    server
        .request(
            Method::POST,
            "/api/auth/key-session",
            &[
                ("content-type", "application/json"),
                ("origin", "https://evil.example"),
            ],
            json!({ "apiKey": key }).to_string(),
        )
        .await
        .assert_status(StatusCode::FORBIDDEN);
    server
        .request(
            Method::POST,
            "/api/auth/key-session",
            &[("content-type", "text/plain")],
            json!({ "apiKey": key }).to_string(),
        )
        .await
        .assert_status(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Disabled, the session stops; enabled again, it works; regenerated or revoked, it ends.
    let patch = |active: bool| {
        let path = format!("/api/v1/api-keys/{key_id}");
        let server = &server;
        async move {
            server
                .operator_json(Method::PATCH, &path, json!({ "is_active": active }))
                .await
                .assert_status(StatusCode::OK);
        }
    };
    patch(false).await;
    assert_eq!(
        server
            .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    patch(true).await;
    server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await
        .assert_status(StatusCode::OK);
    server
        .operator_json(
            Method::POST,
            &format!("/api/v1/api-keys/{key_id}/regenerate"),
            json!({}),
        )
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(
        server
            .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Given a permission list, the key can no longer carry a session.
    let (restricted_later, plain_later, _) = server.create_key(json!({"name": "later"})).await;
    let cookie_later = cookie_of(&exchange(&server, &plain_later).await);
    server
        .operator_json(
            Method::PATCH,
            &format!("/api/v1/api-keys/{restricted_later}"),
            json!({ "permissions": ["chat"] }),
        )
        .await
        .assert_status(StatusCode::OK);
    assert_eq!(
        server
            .get("/api/v1/auth/whoami", &[("cookie", &cookie_later)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The session draws on its key's rate limit, not the plan's.
    let (_, slow, _) = server
        .create_key(json!({"name": "slow", "rateLimit": 2}))
        .await;
    let cookie_slow = cookie_of(&exchange(&server, &slow).await);
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(
                server
                    .get("/api/v1/auth/whoami", &[("cookie", &cookie_slow)])
                    .await
                    .status
                    .as_u16(),
            );
        }
        out
    };
    assert_eq!(statuses, [200, 200, 429], "the key's 2 per minute");
    // A key that expires ends its session at that moment (the manual clock).
    let (_, short, _) = server
        .create_key(json!({"name": "short", "expires_at": "2026-01-02T00:00:00Z"}))
        .await;
    let cookie = cookie_of(&exchange(&server, &short).await);
    server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await
        .assert_status(StatusCode::OK);
    server.clock.advance_millis(2 * 86_400_000);
    assert_eq!(
        server
            .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn every_page_and_form_works_with_the_session_and_the_csrf_rule() {
    let server = TestServer::start().await;
    let key = server.operator_key.clone();
    // `/` sends to the dashboard, which sends a browser without a session to sign in.
    let root = server.get("/", &[]).await;
    root.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(root.header("location"), Some("/dashboard"));
    let bare = server.get("/dashboard/keys", &[]).await;
    assert_eq!(bare.status, StatusCode::SEE_OTHER);
    assert_eq!(bare.header("location"), Some("/dashboard/sign-in"));
    let sign_in = html(&server.get("/dashboard/sign-in", &[]).await);
    assert!(sign_in.contains(r#"<label for="api_key">"#), "{sign_in}");

    // The sign-in form: a wrong key is said next to the field; the right one signs in.
    let form = |body: String| {
        let server = &server;
        async move {
            server
                .request(
                    Method::POST,
                    "/dashboard/sign-in",
                    &[("content-type", "application/x-www-form-urlencoded")],
                    body,
                )
                .await
        }
    };
    let wrong = form("api_key=ek_live_nope".into()).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(html(&wrong).contains("sign-in-error"));
    let signed = form(format!("api_key={key}")).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert_eq!(signed.header("location"), Some("/dashboard"));
    let cookie = cookie_of(&signed);

    // Every page, with its charts as SVG and tables.
    let overview = html(&page(&server, &cookie, "/dashboard").await);
    assert!(
        overview.contains("Balance") && overview.contains("<svg"),
        "{overview}"
    );
    assert!(overview.contains("<table>") && overview.contains("Metered calls per day"));
    for path in [
        "/dashboard/keys",
        "/dashboard/apps",
        "/dashboard/credits",
        "/dashboard/usage",
    ] {
        let r = page(&server, &cookie, path).await;
        r.assert_status(StatusCode::OK);
        let text = html(&r);
        assert!(text.contains(r#"aria-current="page""#), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.starts_with("default-src 'none'")
                && csp.contains("'sha256-")
                && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert!(!text.contains(&key), "{path} shows the key");
    }
    page(&server, &cookie, "/dashboard/nowhere")
        .await
        .assert_status(StatusCode::NOT_FOUND);

    // A key created by the form is shown once, then only its prefix.
    let created = post_form(
        &server,
        &cookie,
        "/dashboard/keys",
        "name=From+the+form&type=live&permissions=chat&permissions=apps&rateLimit=30",
    )
    .await;
    created.assert_status(StatusCode::OK);
    let text = html(&created);
    assert!(text.contains("It will not be shown again."), "{text}");
    let plain = text
        .split("value=\"ek_live_")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|rest| format!("ek_live_{rest}"))
        .unwrap();
    let listed = server
        .operator_json(Method::GET, "/api/v1/api-keys", json!(null))
        .await
        .json();
    let made = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "From the form")
        .unwrap()
        .clone();
    assert_eq!(made["permissions"], json!(["chat", "apps"]));
    assert_eq!(made["rateLimit"], 30);
    assert_eq!(server.whoami_status(&plain).await, 200);
    let again = html(&page(&server, &cookie, "/dashboard/keys").await);
    assert!(!again.contains(&plain) && again.contains("From the form"));
    // A form error is said next to its field.
    let bad = post_form(&server, &cookie, "/dashboard/keys", "name=x&rateLimit=0").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        html(&bad).contains(r#"id="/dashboard/keys-rateLimit-error""#),
        "{}",
        html(&bad)
    );
    // Revoke by the form: the key stops working.
    let id = made["id"].as_str().unwrap();
    post_form(
        &server,
        &cookie,
        &format!("/dashboard/keys/{id}/revoke"),
        "",
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(server.whoami_status(&plain).await, 401);

    // CSRF: the same form from another origin, or with no origin at all, is refused.
    for origin in [Some("https://evil.example"), None] {
        let mut headers = vec![
            ("cookie", cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let refused = server
            .request(Method::POST, "/dashboard/keys", &headers, "name=csrf")
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{origin:?}");
        assert!(html(&refused).contains("Cross-site request refused"));
    }
    let listed = server
        .operator_json(Method::GET, "/api/v1/api-keys", json!(null))
        .await
        .json();
    assert!(
        !listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "csrf")
    );

    // An app created by the form shows its key once; its page has every section.
    let made = post_form(
        &server,
        &cookie,
        "/dashboard/apps",
        "name=Shop&app_url=https%3A%2F%2Fshop.example&description=A+shop",
    )
    .await;
    made.assert_status(StatusCode::OK);
    let text = html(&made);
    assert!(
        text.contains("The app&#39;s API key") || text.contains("The app's API key"),
        "{text}"
    );
    let app_key = text
        .split("value=\"ek_live_")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|rest| format!("ek_live_{rest}"))
        .unwrap();
    let apps = server
        .operator_json(Method::GET, "/api/v1/apps", json!(null))
        .await
        .json();
    let app = apps["apps"][0]["id"].as_str().unwrap().to_string();
    let app_page = html(&page(&server, &cookie, &format!("/dashboard/apps/{app}")).await);
    for section in [
        "Analytics",
        "Users",
        "Monetization",
        "Earnings",
        "Webhook",
        "Domains",
    ] {
        assert!(
            app_page.contains(&format!("<h2>{section}</h2>")),
            "{section}"
        );
    }
    // Monetization by the form, read back through the API; a bad price is said by its field.
    post_form(
        &server,
        &cookie,
        &format!("/dashboard/apps/{app}/monetization"),
        "enabled=true&perRequest=0.001&perToken=0.000002",
    )
    .await
    .assert_status(StatusCode::OK);
    let money = server
        .operator_json(
            Method::GET,
            &format!("/api/v1/apps/{app}/monetization"),
            json!(null),
        )
        .await
        .json();
    assert_eq!(money["enabled"], true);
    assert_eq!(money["pricing"]["perRequest_micros"], 1000);
    assert_eq!(money["pricing"]["perToken_micros"], 2);
    let bad = post_form(
        &server,
        &cookie,
        &format!("/dashboard/apps/{app}/monetization"),
        "enabled=true&perRequest=-1&perToken=0",
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        html(&bad).contains(&format!(
            r#"id="/dashboard/apps/{app}/monetization-pricing.perRequest-error""#
        )),
        "{}",
        html(&bad)
    );
    // A domain added by the form shows its TXT record.
    let added = post_form(
        &server,
        &cookie,
        &format!("/dashboard/apps/{app}/domains"),
        "domain=shop.example.com",
    )
    .await;
    added.assert_status(StatusCode::OK);
    let text = html(&added);
    assert!(
        text.contains("_eliza-cloud-verify.shop.example.com") && text.contains("eliza-verify-")
    );

    // An app's key cannot open the dashboard, nor exchange itself for a session.
    let refused = server.get("/dashboard", &[("x-api-key", &app_key)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    html(&refused);
    let refused = server
        .request(
            Method::POST,
            "/dashboard/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("api_key={app_key}"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Sign-out ends the session.
    let out = post_form(&server, &cookie, "/dashboard/sign-out", "").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = page(&server, &cookie, "/dashboard").await;
    assert_eq!(after.header("location"), Some("/dashboard/sign-in"));
    crate::monetization::check_clean(&server);
}

#[tokio::test]
async fn the_remaining_forms_act_through_the_api() {
    let dns = crate::dns::Dns::start().await;
    let server = TestServer::start_with({
        let addr = dns.addr;
        move |c| {
            c.apps.dns_resolver = Some(addr);
            c.apps.allow_private_webhooks = true;
        }
    })
    .await;
    let key = server.operator_key.clone();
    let signed = server
        .request(
            Method::POST,
            "/dashboard/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            format!("api_key={key}"),
        )
        .await;
    let cookie = cookie_of(&signed);

    // Disable, enable and regenerate a key by its forms.
    let (id, plain, _) = server.create_key(json!({"name": "spare"})).await;
    post_form(
        &server,
        &cookie,
        &format!("/dashboard/keys/{id}/toggle"),
        "is_active=false",
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(server.whoami_status(&plain).await, 401);
    post_form(
        &server,
        &cookie,
        &format!("/dashboard/keys/{id}/toggle"),
        "is_active=true",
    )
    .await
    .assert_status(StatusCode::OK);
    assert_eq!(server.whoami_status(&plain).await, 200);
    let regenerated = html(
        &post_form(
            &server,
            &cookie,
            &format!("/dashboard/keys/{id}/regenerate"),
            "",
        )
        .await,
    );
    assert!(regenerated.contains("It will not be shown again."));
    assert_eq!(server.whoami_status(&plain).await, 401);

    let app = server
        .operator_json(
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Shop", "app_url": "https://s.example"}),
        )
        .await
        .json()["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let here = format!("/dashboard/apps/{app}");

    // Withdraw with nothing available: the API's refusal, next to the amount.
    let refused = post_form(
        &server,
        &cookie,
        &format!("{here}/withdraw"),
        "amount=5&idempotency_key=k1",
    )
    .await;
    assert!(refused.status.is_client_error(), "{}", refused.status);
    assert!(html(&refused).contains(&format!(r#"id="{here}/withdraw-amount-error""#)));

    // The webhook: saved (its secret shown once), a test event, then its redelivery.
    let saved = post_form(
        &server,
        &cookie,
        &format!("{here}/webhook"),
        "url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&events=user.created&events=error.occurred",
    )
    .await;
    saved.assert_status(StatusCode::OK);
    let text = html(&saved);
    assert!(
        text.contains("whsec_") && text.contains("It will not be shown again."),
        "{text}"
    );
    post_form(&server, &cookie, &format!("{here}/webhook/test"), "")
        .await
        .assert_status(StatusCode::OK);
    let deliveries = server
        .operator_json(
            Method::GET,
            &format!("/api/v1/apps/{app}/webhook/deliveries"),
            json!(null),
        )
        .await
        .json();
    let delivery = deliveries["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let page_text = html(&page(&server, &cookie, &here).await);
    assert!(page_text.contains(&delivery), "the delivery log lists it");
    post_form(
        &server,
        &cookie,
        &format!("{here}/redeliver"),
        &format!("delivery={delivery}"),
    )
    .await
    .assert_status(StatusCode::OK);

    // A delivery id that is not one is refused by its field, before any URI is made.
    let odd = post_form(
        &server,
        &cookie,
        &format!("{here}/redeliver"),
        "delivery=a+b%2F..%3Fx",
    )
    .await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);
    assert!(html(&odd).contains(&format!(r#"id="{here}/redeliver-delivery-error""#)));

    // A domain: verify before its TXT record (said next to the field), after it, then delete.
    post_form(
        &server,
        &cookie,
        &format!("{here}/domains"),
        "domain=shop.example.test",
    )
    .await
    .assert_status(StatusCode::OK);
    let early = post_form(
        &server,
        &cookie,
        &format!("{here}/domains/verify"),
        "domain=shop.example.test",
    )
    .await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST);
    assert!(html(&early).contains("no TXT record"));
    let listed = server
        .operator_json(
            Method::GET,
            &format!("/api/v1/apps/{app}/domains"),
            json!(null),
        )
        .await
        .json();
    dns.set_txt(
        "_eliza-cloud-verify.shop.example.test.",
        listed["domains"][0]["verificationRecord"]["value"]
            .as_str()
            .unwrap(),
    )
    .await;
    let verified = post_form(
        &server,
        &cookie,
        &format!("{here}/domains/verify"),
        "domain=shop.example.test",
    )
    .await;
    verified.assert_status(StatusCode::OK);
    assert!(html(&verified).contains("Domain verified."));
    post_form(
        &server,
        &cookie,
        &format!("{here}/domains/delete"),
        "domain=shop.example.test",
    )
    .await
    .assert_status(StatusCode::OK);
    let listed = server
        .operator_json(
            Method::GET,
            &format!("/api/v1/apps/{app}/domains"),
            json!(null),
        )
        .await
        .json();
    assert_eq!(listed["domains"], json!([]));
    crate::monetization::check_clean(&server);
}
