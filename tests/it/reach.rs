//! Who reaches which app (SPEC §10, the hosted cloud's bug #10852 made impossible): two
//! organizations with two apps each; their organization keys and the four app keys, against
//! every app route on every app, in random orders with the writes among them. Another
//! organization's app is 404 for every credential; a sibling's is 403 for an app key; an app key
//! reads its own app (its analytics, users and earnings) and nothing of its settings; the owning
//! organization's key manages. After the run, no app of one organization was changed by the
//! other's credentials.

use http::Method;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::signin::{EvmWallet, siwe_sign_in};
use crate::support::TestServer;

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Analytics,
    Users,
    Earnings,
    Monetization,
    SetMonetization,
    Webhook,
    SetWebhook,
    Deliveries,
    Rotate,
    Test,
    Patch,
    Regenerate,
    Withdraw,
    /// A metered call naming the app in `X-App-Id`.
    CallThrough,
}

const OPS: [Op; 15] = [
    Op::Get,
    Op::Analytics,
    Op::Users,
    Op::Earnings,
    Op::Monetization,
    Op::SetMonetization,
    Op::Webhook,
    Op::SetWebhook,
    Op::Deliveries,
    Op::Rotate,
    Op::Test,
    Op::Patch,
    Op::Regenerate,
    Op::Withdraw,
    Op::CallThrough,
];

impl Op {
    /// The app key's own reads (SPEC §10).
    fn own_read(self) -> bool {
        matches!(self, Op::Get | Op::Analytics | Op::Users | Op::Earnings)
    }

    fn request(self, app: &str) -> (Method, String, Option<Value>) {
        let base = format!("/api/v1/apps/{app}");
        match self {
            Op::Get => (Method::GET, base, None),
            Op::Analytics => (Method::GET, format!("{base}/analytics"), None),
            Op::Users => (Method::GET, format!("{base}/users"), None),
            Op::Earnings => (Method::GET, format!("{base}/earnings"), None),
            Op::Monetization => (Method::GET, format!("{base}/monetization"), None),
            Op::SetMonetization => (
                Method::POST,
                format!("{base}/monetization"),
                Some(json!({"enabled": true, "pricing": {"perRequest": "0.0001"}})),
            ),
            Op::Webhook => (Method::GET, format!("{base}/webhook"), None),
            Op::SetWebhook => (
                Method::POST,
                format!("{base}/webhook"),
                Some(json!({"url": "http://127.0.0.1:9/hook", "events": ["user.created"]})),
            ),
            Op::Deliveries => (Method::GET, format!("{base}/webhook/deliveries"), None),
            Op::Rotate => (Method::POST, format!("{base}/webhook/rotate-secret"), None),
            Op::Test => (Method::POST, format!("{base}/webhook/test"), None),
            Op::Patch => (Method::PATCH, base, Some(json!({"description": "changed"}))),
            Op::Regenerate => (Method::POST, format!("{base}/regenerate-api-key"), None),
            Op::Withdraw => (
                Method::POST,
                format!("{base}/earnings/withdraw"),
                Some(json!({"amount": "0.000001"})),
            ),
            Op::CallThrough => (
                Method::POST,
                "/api/v1/embeddings".into(),
                Some(json!({"model": "text-embedding-3-small", "input": "x"})),
            ),
        }
    }
}

struct World {
    server: TestServer,
    /// Per organization: its key and its two apps (id, app key).
    orgs: Vec<(String, Vec<(String, String)>)>,
}

async fn world() -> World {
    let server = TestServer::start_with(|c| c.apps.allow_private_webhooks = true).await;
    let operator = server.operator_key.clone();
    let stranger = siwe_sign_in(&server, &EvmWallet::new()).await.json()["apiKey"]
        .as_str()
        .unwrap()
        .to_string();
    let mut orgs = Vec::new();
    for (n, key) in [operator, stranger].into_iter().enumerate() {
        let mut apps = Vec::new();
        for m in 0..2 {
            let r = server
                .json_as(
                    &key,
                    Method::POST,
                    "/api/v1/apps",
                    json!({"name": format!("Org {n} app {m}"), "app_url": "https://a.example"}),
                )
                .await;
            let j = r.json();
            apps.push((
                j["app"]["id"].as_str().unwrap().to_string(),
                j["apiKey"].as_str().unwrap().to_string(),
            ));
        }
        orgs.push((key, apps));
    }
    World { server, orgs }
}

/// A principal: an organization's key (`app: None`) or one of its apps' keys.
#[derive(Debug, Clone, Copy)]
struct Who {
    org: usize,
    app: Option<usize>,
}

impl World {
    fn key_of(&self, who: Who) -> String {
        match who.app {
            None => self.orgs[who.org].0.clone(),
            Some(a) => self.orgs[who.org].1[a].1.clone(),
        }
    }

    /// Runs one request; answers its status, and keeps the world's app keys current.
    async fn run(&mut self, who: Who, op: Op, org: usize, app: usize) -> u16 {
        let key = self.key_of(who);
        let id = self.orgs[org].1[app].0.clone();
        let (method, path, body) = op.request(&id);
        let mut headers = vec![("x-api-key", key.as_str())];
        if matches!(op, Op::CallThrough) {
            headers.push(("x-app-id", id.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        if !body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        // A second per request: every bucket (60 a minute on the free plan) has a token again.
        self.server.clock.advance_millis(1000);
        let r = self.server.request(method, &path, &headers, body).await;
        let status = r.status.as_u16();
        if matches!(op, Op::Regenerate) && status == 200 {
            self.orgs[org].1[app].1 = r.json()["apiKey"].as_str().unwrap().to_string();
        }
        status
    }
}

/// The status classes the contract gives: `Ok(())` for anything but 403/404/401, or the exact
/// refusal.
fn expected(who: Who, op: Op, org: usize, app: usize) -> Option<u16> {
    if matches!(op, Op::CallThrough) {
        // Any organization's key may call through any active app; an app key only as its own.
        return match who.app {
            None => None,
            Some(a) if who.org == org && a == app => None,
            Some(_) => Some(403),
        };
    }
    if who.org != org {
        return Some(404);
    }
    match who.app {
        None => None,
        Some(a) if a == app && op.own_read() => None,
        Some(_) => Some(403),
    }
}

async fn round(steps: Vec<(usize, Option<usize>, usize, usize, usize)>) {
    let mut world = world().await;
    let before: Vec<Value> = {
        let mut shown = Vec::new();
        for (org, (key, apps)) in world.orgs.iter().enumerate() {
            for (id, _) in apps {
                let r = world
                    .server
                    .get(&format!("/api/v1/apps/{id}"), &[("x-api-key", key)])
                    .await;
                shown.push(json!({"org": org, "name": r.json()["app"]["name"]}));
            }
        }
        shown
    };
    for (org, app, op, target_org, target_app) in steps {
        let who = Who {
            org: org % 2,
            app: app.map(|a| a % 2),
        };
        let op = OPS[op % OPS.len()];
        let (target_org, target_app) = (target_org % 2, target_app % 2);
        let status = world.run(who, op, target_org, target_app).await;
        match expected(who, op, target_org, target_app) {
            Some(refused) => assert_eq!(
                status, refused,
                "{who:?} {op:?} on org {target_org} app {target_app}"
            ),
            None => assert!(
                ![401, 403, 404, 429].contains(&status) && status < 500,
                "{who:?} {op:?} on org {target_org} app {target_app}: {status}"
            ),
        }
    }
    // Every app still has its name, and every org key still sees exactly its own two apps.
    let mut after = Vec::new();
    for (org, (key, apps)) in world.orgs.iter().enumerate() {
        world.server.clock.advance_millis(1000);
        let listed = world
            .server
            .get("/api/v1/apps", &[("x-api-key", key)])
            .await
            .json();
        let mut ids: Vec<&str> = listed["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        let mut own: Vec<&str> = apps.iter().map(|(id, _)| id.as_str()).collect();
        own.sort_unstable();
        assert_eq!(ids, own);
        for (id, _) in apps {
            world.server.clock.advance_millis(1000);
            let r = world
                .server
                .get(&format!("/api/v1/apps/{id}"), &[("x-api-key", key)])
                .await;
            after.push(json!({"org": org, "name": r.json()["app"]["name"]}));
        }
    }
    assert_eq!(before, after);
}

#[tokio::test]
async fn every_principal_against_every_app_route_on_every_app() {
    let mut steps = Vec::new();
    for org in 0..2 {
        for app in [None, Some(0), Some(1)] {
            for op in 0..OPS.len() {
                for target_org in 0..2 {
                    for target_app in 0..2 {
                        steps.push((org, app, op, target_org, target_app));
                    }
                }
            }
        }
    }
    round(steps).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn no_principal_reaches_another_organizations_or_apps_resources(
        steps in proptest::collection::vec(
            (0usize..2, proptest::option::of(0usize..2), 0usize..OPS.len(), 0usize..2, 0usize..2),
            1..40,
        )
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(round(steps));
    }
}
