//! Apps over real HTTP (SPEC §10, the part built so far): create with the app key shown once,
//! names and slugs, listing, changing, regenerating and deleting, and what an app's key reaches:
//! its metered routes and its own app, nothing of its siblings (403) or of other organizations
//! (404).

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::gateway::{grant, organization_of};
use crate::signin::{EvmWallet, siwe_sign_in};
use crate::support::{TestResponse, TestServer};

async fn create_app(server: &TestServer, key: &str, body: Value) -> TestResponse {
    server
        .json_as(key, Method::POST, "/api/v1/apps", body)
        .await
}

/// Creates an app with the operator's key; answers (app id, app key, app view).
async fn app(server: &TestServer, name: &str) -> (String, String, Value) {
    let key = server.operator_key.clone();
    let r = create_app(
        server,
        &key,
        json!({"name": name, "app_url": "https://example.com/app"}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let json = r.json();
    (
        json["app"]["id"].as_str().unwrap().to_string(),
        json["apiKey"].as_str().unwrap().to_string(),
        json["app"].clone(),
    )
}

#[tokio::test]
async fn an_app_is_created_with_its_key_shown_once_and_managed() {
    let server = TestServer::start().await;
    let key = server.operator_key.clone();
    let r = create_app(
        &server,
        &key,
        json!({"name": "My Cool App!", "app_url": "https://Example.com/app", "website": "https://example.com",
               "description": "d"}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let body = r.json();
    assert_eq!(body["success"], true);
    let app_key = body["apiKey"].as_str().unwrap();
    assert!(app_key.starts_with("ek_live_"));
    assert_eq!(
        body["app"]["api_key"], app_key,
        "shown in app.api_key as the docs show"
    );
    let app = &body["app"];
    assert_eq!(app["slug"], "my-cool-app");
    assert_eq!(app["subdomain"], "my-cool-app");
    assert_eq!(app["permissions"], json!(["chat", "embeddings", "images"]));
    assert_eq!(app["rateLimit"], 600);
    assert_eq!(app["allowed_origins"], json!(["https://example.com"]));
    assert_eq!(app["website_url"], "https://example.com");
    assert_eq!(app["api_key_prefix"], &app_key[..12]);
    assert_eq!(app["monetization"]["enabled"], false);
    let id = app["id"].as_str().unwrap().to_string();

    // Shown once: never again in the app, the list or the key list.
    let shown = server
        .get(&format!("/api/v1/apps/{id}"), &[("x-api-key", &key)])
        .await;
    shown.assert_status(StatusCode::OK);
    assert!(!String::from_utf8_lossy(&shown.body).contains(app_key));
    let keys = server.get("/api/v1/api-keys", &[("x-api-key", &key)]).await;
    assert!(!String::from_utf8_lossy(&keys.body).contains(app_key));
    assert!(
        keys.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["app_id"] == id.as_str())
    );

    // The name and slug are taken now.
    let check = server
        .json_as(
            &key,
            Method::POST,
            "/api/v1/apps/check-name",
            json!({"name": "my cool app"}),
        )
        .await;
    let check = check.json();
    assert_eq!(
        (check["available"].clone(), check["slug"].clone()),
        (json!(false), json!("my-cool-app"))
    );
    assert_eq!(check["suggestedName"], "my cool app 2");
    let free = server
        .json_as(
            &key,
            Method::POST,
            "/api/v1/apps/check-name",
            json!({"name": "Other"}),
        )
        .await;
    assert_eq!(free.json()["available"], true);
    let again = create_app(
        &server,
        &key,
        json!({"name": "my cool app", "app_url": "https://x.io"}),
    )
    .await;
    let e = again.assert_error(409, "CONFLICT");
    assert_eq!(e["details"]["suggestedName"], "my cool app 2");

    // A reserved label keeps its slug but gets another subdomain. (A millisecond later, so the
    // list's newest-first order is defined.)
    server.clock.advance_millis(1);
    let api = create_app(
        &server,
        &key,
        json!({"name": "API", "app_url": "https://x.io"}),
    )
    .await
    .json();
    assert_eq!(api["app"]["slug"], "api");
    let sub = api["app"]["subdomain"].as_str().unwrap();
    assert!(sub.starts_with("api-") && sub.len() == 8, "{sub}");

    // Bad input names the field.
    for (body, field) in [
        (json!({"app_url": "https://x.io"}), "name"),
        (json!({"name": "x"}), "app_url"),
        (
            json!({"name": "x", "app_url": "javascript:alert(1)"}),
            "app_url",
        ),
        (
            json!({"name": "x", "app_url": "https://x.io", "allowed_origins": ["x.io"]}),
            "allowed_origins",
        ),
        (
            json!({"name": "x", "app_url": "https://x.io", "allowedEndpoints": ["admin"]}),
            "permissions",
        ),
    ] {
        let r = create_app(&server, &key, body).await;
        assert_eq!(r.assert_error(400, "VALIDATION_ERROR")["param"], field);
    }

    // List, change (the slug stays), regenerate, delete.
    let list = server
        .get("/api/v1/apps?limit=1", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(
        (
            list["total"].clone(),
            list["apps"].as_array().unwrap().len()
        ),
        (json!(2), 1)
    );
    assert_eq!(list["apps"][0]["name"], "API", "newest first");
    let patched = server
        .json_as(&key, Method::PATCH, &format!("/api/v1/apps/{id}"),
                 json!({"name": "Renamed", "allowed_origins": ["https://*.example.com", "*"], "rateLimit": 5}))
        .await
        .json();
    assert_eq!(patched["app"]["name"], "Renamed");
    assert_eq!(patched["app"]["slug"], "my-cool-app");
    assert_eq!(
        patched["app"]["allowed_origins"],
        json!(["https://*.example.com", "*"])
    );
    assert_eq!(server.whoami_status(app_key).await, 200);
    let regenerated = server
        .json_as(
            &key,
            Method::POST,
            &format!("/api/v1/apps/{id}/regenerate-api-key"),
            json!({}),
        )
        .await
        .json();
    let new_key = regenerated["apiKey"].as_str().unwrap().to_string();
    assert_eq!(
        server.whoami_status(app_key).await,
        401,
        "the old key fails at once, cache included"
    );
    assert_eq!(server.whoami_status(&new_key).await, 200);
    let dashboard = server
        .get("/api/v1/dashboard", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(dashboard["apps"]["total"], 2);
    let deleted = server
        .request(
            Method::DELETE,
            &format!("/api/v1/apps/{id}"),
            &[("x-api-key", &key)],
            "",
        )
        .await;
    deleted.assert_status(StatusCode::OK);
    assert_eq!(
        server.whoami_status(&new_key).await,
        401,
        "its key went with it"
    );
    server
        .get(&format!("/api/v1/apps/{id}"), &[("x-api-key", &key)])
        .await
        .assert_error(404, "NOT_FOUND");
    // The slug is free again.
    let check = server
        .json_as(
            &key,
            Method::POST,
            "/api/v1/apps/check-name",
            json!({"name": "my cool app"}),
        )
        .await;
    assert_eq!(check.json()["available"], true);
}

#[tokio::test]
async fn an_app_key_reaches_its_own_app_and_metered_routes_and_nothing_else() {
    let server = TestServer::start().await;
    let owner = server.operator_key.clone();
    let (id, app_key, _) = app(&server, "Alpha").await;
    let (sibling, sibling_key, _) = app(&server, "Beta").await;
    // Another organization and its app.
    let signed = siwe_sign_in(&server, &EvmWallet::new()).await.json();
    let stranger = signed["apiKey"].as_str().unwrap().to_string();
    let foreign = create_app(
        &server,
        &stranger,
        json!({"name": "Gamma", "app_url": "https://g.io"}),
    )
    .await
    .json();
    let foreign_id = foreign["app"]["id"].as_str().unwrap().to_string();

    let get = |key: &str, path: String| {
        let key = key.to_string();
        let server = &server;
        async move { server.get(&path, &[("x-api-key", &key)]).await }
    };
    // Its own app, whatever its permission list says (it holds no `apps`).
    get(&app_key, format!("/api/v1/apps/{id}"))
        .await
        .assert_status(StatusCode::OK);
    // A sibling: 403. Another organization's: 404, for the app key and the owner alike.
    get(&app_key, format!("/api/v1/apps/{sibling}"))
        .await
        .assert_error(403, "FORBIDDEN");
    get(&app_key, format!("/api/v1/apps/{foreign_id}"))
        .await
        .assert_error(404, "NOT_FOUND");
    get(&owner, format!("/api/v1/apps/{foreign_id}"))
        .await
        .assert_error(404, "NOT_FOUND");
    get(&stranger, format!("/api/v1/apps/{id}"))
        .await
        .assert_error(404, "NOT_FOUND");
    let r = server
        .json_as(
            &stranger,
            Method::PATCH,
            &format!("/api/v1/apps/{id}"),
            json!({"name": "x"}),
        )
        .await;
    r.assert_error(404, "NOT_FOUND");
    let r = server
        .request(
            Method::DELETE,
            &format!("/api/v1/apps/{id}"),
            &[("x-api-key", &stranger)],
            "",
        )
        .await;
    r.assert_error(404, "NOT_FOUND");
    // The organization's own routes and app management: 403 for an app key.
    for path in [
        "/api/v1/apps",
        "/api/v1/api-keys",
        "/api/v1/credits",
        "/api/v1/dashboard",
    ] {
        get(&app_key, path.to_string())
            .await
            .assert_error(403, "FORBIDDEN");
    }
    let r = server
        .json_as(
            &app_key,
            Method::PATCH,
            &format!("/api/v1/apps/{id}"),
            json!({"name": "x"}),
        )
        .await;
    r.assert_error(403, "FORBIDDEN");
    let r = server
        .json_as(
            &app_key,
            Method::POST,
            &format!("/api/v1/apps/{id}/regenerate-api-key"),
            json!({}),
        )
        .await;
    r.assert_error(403, "FORBIDDEN");
    let r = create_app(
        &server,
        &app_key,
        json!({"name": "Nested", "app_url": "https://n.io"}),
    )
    .await;
    r.assert_error(403, "FORBIDDEN");
    // What it may: whoami, models, the metered routes of its permissions, its usage.
    get(&app_key, "/api/v1/auth/whoami".into())
        .await
        .assert_status(StatusCode::OK);
    get(&app_key, "/api/v1/models".into())
        .await
        .assert_status(StatusCode::OK);
    grant(&server, organization_of(&server, &owner).await, 1_000_000);
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = server
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &[("x-api-key", &app_key), ("x-app-user-id", "end-user-1")],
            chat.to_string(),
        )
        .await;
    r.assert_status(StatusCode::OK);
    let cost: i64 = r.header("x-eliza-cost-micros").unwrap().parse().unwrap();
    assert!(cost > 0);
    // Debited from the owner; its usage shows under byApp; the app key sees its app alone.
    let usage = get(&owner, "/api/v1/usage".into()).await.json();
    assert_eq!(usage["byApp"][0]["appId"], id.as_str());
    assert_eq!(usage["byApp"][0]["name"], "Alpha");
    assert_eq!(usage["byApp"][0]["cost_micros"], cost);
    let own = get(&app_key, "/api/v1/usage".into()).await.json();
    assert_eq!(own["totals"]["cost_micros"], cost);
    assert_eq!(own["byApp"].as_array().unwrap().len(), 1);
    let sibling_usage = get(&sibling_key, "/api/v1/usage".into()).await.json();
    assert_eq!(
        sibling_usage["totals"]["requests"], 0,
        "a sibling sees none of it"
    );
    // Its permissions bound it: an app made for chat alone cannot embed.
    let chat_only = create_app(
        &server,
        &owner,
        json!({"name": "Chatty", "app_url": "https://c.io", "permissions": ["chat"]}),
    )
    .await
    .json();
    let chat_key = chat_only["apiKey"].as_str().unwrap().to_string();
    let r = server
        .json_as(
            &chat_key,
            Method::POST,
            "/api/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await;
    assert_eq!(
        r.assert_error(403, "FORBIDDEN")["details"]["required"],
        "embeddings:write"
    );
}

#[tokio::test]
async fn app_creation_never_escalates_and_test_keys_make_test_app_keys() {
    let server = TestServer::start().await;
    let (_, apps_only, _) = server
        .create_key(json!({"name": "a", "permissions": ["apps"]}))
        .await;
    // The default permissions (chat, embeddings, images) are more than `apps`.
    let r = create_app(
        &server,
        &apps_only,
        json!({"name": "A", "app_url": "https://a.io"}),
    )
    .await;
    r.assert_error(403, "FORBIDDEN");
    let (_, wide, _) = server
        .create_key(json!({"name": "w", "permissions": ["apps", "chat"]}))
        .await;
    let r = create_app(
        &server,
        &wide,
        json!({"name": "B", "app_url": "https://b.io", "permissions": ["chat"]}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let r = create_app(
        &server,
        &wide,
        json!({"name": "C", "app_url": "https://c.io", "permissions": ["images"]}),
    )
    .await;
    r.assert_error(403, "FORBIDDEN");
    // Without `apps` nothing of app management.
    let (_, chat_only, _) = server
        .create_key(json!({"name": "c", "permissions": ["chat"]}))
        .await;
    let r = server
        .get("/api/v1/apps", &[("x-api-key", &chat_only)])
        .await;
    assert_eq!(
        r.assert_error(403, "FORBIDDEN")["details"]["required"],
        "apps:read"
    );
    // A test key's app gets a test key.
    let (_, test_key, _) = server
        .create_key(json!({"name": "t", "type": "test"}))
        .await;
    let r = create_app(
        &server,
        &test_key,
        json!({"name": "T", "app_url": "https://t.io"}),
    )
    .await
    .json();
    assert!(r["apiKey"].as_str().unwrap().starts_with("ek_test_"));
}

#[tokio::test]
async fn an_app_keys_browser_calls_come_from_its_allowed_origins() {
    let server = TestServer::start().await;
    let key = server.operator_key.clone();
    let r = create_app(
        &server,
        &key,
        json!({"name": "Web", "app_url": "https://web.example.com:443/start",
               "allowed_origins": ["https://web.example.com", "https://*.preview.example.com"]}),
    )
    .await
    .json();
    let app_key = r["apiKey"].as_str().unwrap().to_string();
    // A default app_url port is dropped, as browsers drop it from `Origin`.
    let plain = create_app(
        &server,
        &key,
        json!({"name": "Port", "app_url": "https://p.example.com:443/x"}),
    )
    .await
    .json();
    assert_eq!(
        plain["app"]["allowed_origins"],
        json!(["https://p.example.com"])
    );
    let whoami = |origin: Option<&'static str>| {
        let key = app_key.clone();
        let server = &server;
        async move {
            let mut headers = vec![("x-api-key", key.as_str())];
            if let Some(o) = origin {
                headers.push(("origin", o));
            }
            server.get("/api/v1/auth/whoami", &headers).await
        }
    };
    // No Origin: a server-side call.
    whoami(None).await.assert_status(StatusCode::OK);
    let ok = whoami(Some("https://web.example.com")).await;
    ok.assert_status(StatusCode::OK);
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));
    whoami(Some("https://pr-12.preview.example.com"))
        .await
        .assert_status(StatusCode::OK);
    for refused in [
        "https://evil.io",
        "http://web.example.com",
        "https://preview.example.com",
    ] {
        whoami(Some(refused)).await.assert_error(403, "FORBIDDEN");
    }
    // An organization's own key is not bound by an app's origins.
    let r = server
        .get(
            "/api/v1/auth/whoami",
            &[("x-api-key", &key), ("origin", "https://evil.io")],
        )
        .await;
    r.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn an_apps_calls_show_in_its_analytics_and_end_users() {
    let server = TestServer::start().await;
    let owner = server.operator_key.clone();
    let (id, app_key, _) = app(&server, "Counted").await;
    grant(&server, organization_of(&server, &owner).await, 1_000_000);
    let call = |path: &'static str, body: Value, user: &'static str| {
        let key = app_key.clone();
        let server = &server;
        async move {
            let r = server
                .request(
                    Method::POST,
                    path,
                    &[("x-api-key", &key), ("x-app-user-id", user)],
                    body.to_string(),
                )
                .await;
            r.assert_status(StatusCode::OK);
            r.header("x-eliza-cost-micros")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        }
    };
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let mut total = call("/api/v1/chat/completions", chat.clone(), "alice").await;
    server.clock.advance_millis(1000);
    total += call("/api/v1/chat/completions", chat.clone(), "alice").await;
    server.clock.advance_millis(1000);
    total += call(
        "/api/v1/embeddings",
        json!({"model": "text-embedding-3-small", "input": "x"}),
        "bob",
    )
    .await;
    // A flush in between: stored rows and pending ones add up the same.
    server
        .running()
        .state()
        .usage
        .flush(&server.running().state().store)
        .unwrap();
    server.clock.advance_millis(1000);
    total += call("/api/v1/chat/completions", chat, "alice").await;

    for key in [&owner, &app_key] {
        let a = server
            .get(
                &format!("/api/v1/apps/{id}/analytics?period=2026-01"),
                &[("x-api-key", key)],
            )
            .await;
        a.assert_status(StatusCode::OK);
        let a = a.json();
        assert_eq!(a["appId"], id.as_str());
        assert_eq!(a["usage"]["totalRequests"], 4);
        assert_eq!(a["usage"]["chatCompletions"], 3);
        assert_eq!(a["usage"]["embeddings"], 1);
        assert_eq!(a["usage"]["images"], 0);
        assert_eq!(a["uniqueUsers"], 2);
        assert_eq!(a["costs"]["total_micros"], total);
        assert!(
            a["costs"]["total"].is_number(),
            "§10 shows dollars as numbers"
        );
        assert_eq!(a["daily"][0]["requests"], 4);
        let u = server
            .get(&format!("/api/v1/apps/{id}/users"), &[("x-api-key", key)])
            .await
            .json();
        assert_eq!(u["total"], 2);
        assert_eq!(u["users"][0]["id"], "alice", "most recently seen first");
        assert_eq!(u["users"][0]["requestCount"], 3);
        assert_eq!(u["users"][0]["firstSeen"], "2026-01-01T00:00:00.000Z");
        assert_eq!(u["users"][0]["lastSeen"], "2026-01-01T00:00:03.000Z");
        assert_eq!(u["users"][1]["id"], "bob");
    }
    // A sibling's key sees neither.
    let (_, sibling_key, _) = app(&server, "Sibling").await;
    server
        .get(
            &format!("/api/v1/apps/{id}/analytics"),
            &[("x-api-key", &sibling_key)],
        )
        .await
        .assert_error(403, "FORBIDDEN");
    server
        .get(
            &format!("/api/v1/apps/{id}/users"),
            &[("x-api-key", &sibling_key)],
        )
        .await
        .assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn end_users_page_newest_first_across_stored_and_pending_usage() {
    let server = TestServer::start().await;
    let owner = server.operator_key.clone();
    let (id, app_key, _) = app(&server, "Paged").await;
    grant(&server, organization_of(&server, &owner).await, 1_000_000);
    let call = |user: String| {
        let key = app_key.clone();
        let server = &server;
        async move {
            server.clock.advance_millis(1000);
            server
                .request(
                    Method::POST,
                    "/api/v1/embeddings",
                    &[("x-api-key", &key), ("x-app-user-id", &user)],
                    json!({"model": "text-embedding-3-small", "input": "x"}).to_string(),
                )
                .await
                .assert_status(StatusCode::OK);
        }
    };
    for n in 0..3 {
        call(format!("u{n}")).await;
    }
    let state = server.running().state();
    state.usage.flush(&state.store).unwrap();
    // Pending: three new users and a stored one seen again (it must not show twice).
    for n in 3..6 {
        call(format!("u{n}")).await;
    }
    call("u0".into()).await;
    let mut seen = Vec::new();
    for page in 1..=4 {
        let r = server
            .get(
                &format!("/api/v1/apps/{id}/users?limit=2&page={page}"),
                &[("x-api-key", &owner)],
            )
            .await
            .json();
        assert_eq!(r["total"], 6, "{r}");
        for u in r["users"].as_array().unwrap() {
            seen.push((
                u["id"].as_str().unwrap().to_string(),
                u["requestCount"].as_u64().unwrap(),
            ));
        }
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["u0", "u5", "u4", "u3", "u2", "u1"]);
    assert_eq!(seen[0].1, 2);
    // After the flush, the same pages.
    state.usage.flush(&state.store).unwrap();
    let r = server
        .get(
            &format!("/api/v1/apps/{id}/users?limit=3&page=2"),
            &[("x-api-key", &owner)],
        )
        .await
        .json();
    let names: Vec<&str> = r["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["u3", "u2", "u1"]);
    let a = server
        .get(
            &format!("/api/v1/apps/{id}/analytics"),
            &[("x-api-key", &owner)],
        )
        .await
        .json();
    assert_eq!(a["uniqueUsers"], 6);
    let report = state
        .store
        .read(eliza_cloud::store::check::check_store)
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
