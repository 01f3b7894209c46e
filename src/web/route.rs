//! The router: `(method, path)` → [`Route`] by one pure function, unit-tested without a socket.
//! One variant per operation (garage's `ListKeys`, `CreateKey`, `DeleteKey`), so access rules,
//! metric labels and handlers are per operation. Each route declares everything the pipeline
//! needs to know about it in [`Route::needs`], a `match` with no default arm: who may call it,
//! which credential scopes it admits, whether a payment may stand in for a credential, and how
//! its body is read. `web::dispatch` walks these declarations with no route-specific branch.

use http::Method;
use uuid::Uuid;

use crate::auth::permissions::Resource;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No credential and no bucket: operations endpoints, and answers that touch no data
    /// (405, CORS preflight).
    Public,
    /// No credential, but work is done: one bucket per client address (SPEC §8).
    ClientAddress,
    /// A valid credential meeting this requirement.
    Credential(Requirement),
}

/// What a route requires of a credential's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Any valid credential (SPEC §4's last row).
    AnyCredential,
    /// A grant that allows this resource at the method's level (GET/HEAD read, others write).
    Permission(Resource),
    /// A credential without a permission list: key management (SPEC §4).
    Unrestricted,
    /// The permission, except for an app's key, which reaches its own app's read routes whatever
    /// its permission list says (SPEC §10); the handler confines it to its app.
    PermissionOrAppKey(Resource),
}

/// Which credential scopes (SPEC §4) a route admits. Fails closed: a scope a route does not
/// name is refused (403) before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scopes {
    /// Credentials of an organization only; an app's key is refused.
    Organization,
    /// Organization credentials and app keys; handlers confine an app key to its app through
    /// `auth::scope::may_act_on`.
    OrganizationOrApp,
}

/// Whether a payment may take a credential's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// No: the credential decides alone.
    None,
    /// The route sells something (the x402 top-up): without a payment header it answers 402
    /// to whoever asks, before any credential is checked (so no wallet signature is used up
    /// until the payment comes); with one, a credential is optional and, when present, must
    /// be valid (it names who is credited). Calls without a credential draw on the client
    /// address's bucket.
    Required,
    /// A metered call (SPEC §9): paid from the credential's account when one is presented
    /// (a payment beside it is ignored); with x402 on, a call without a credential is paid by
    /// an x402 payment for that one call (402 with its price when none came); with x402 off it
    /// is a 401 like anywhere else. Calls without a credential draw on the client address's
    /// bucket.
    PerRequest,
}

/// How the route reads its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Not read (unless wallet-signature headers cover it).
    None,
    /// Read as JSON whatever `Content-Type` says, so `curl -d '{…}'` works.
    Json,
    /// Read only when sent as `application/json`, else 415: the login-CSRF defence of the
    /// sign-in routes (SPEC §2, §5.1), since no cross-site form can send that type.
    JsonOnly,
}

/// Whether a request that carries `Origin` must carry ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// A request with an `Origin` header must name our public origin, else 403 (SPEC §5.1).
    OursWhenPresent,
}

/// What wallet-signature authentication does with a wallet that has no account yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewWallets {
    /// The account is made on the spot with the sign-up bonus (SPEC §3).
    Create,
    /// No account until a payment settles, and then without a bonus (SPEC §3: accounts
    /// created by an x402 top-up get no bonus).
    AfterPayment,
}

/// Everything the pipeline needs to know about a route before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub caller: Caller,
    pub scopes: Scopes,
    pub payment: Payment,
    pub body: BodyUse,
    pub origins: Origins,
    pub new_wallets: NewWallets,
}

impl Needs {
    const fn public() -> Needs {
        Needs {
            caller: Caller::Public,
            scopes: Scopes::Organization,
            payment: Payment::None,
            body: BodyUse::None,
            origins: Origins::Any,
            new_wallets: NewWallets::Create,
        }
    }

    const fn credential(requirement: Requirement, scopes: Scopes) -> Needs {
        Needs {
            caller: Caller::Credential(requirement),
            scopes,
            ..Needs::public()
        }
    }

    const fn with_body(self, body: BodyUse) -> Needs {
        Needs { body, ..self }
    }

    /// A metered route of the gateway (SPEC §9): the resource's permission, app keys admitted,
    /// a JSON body, payable per request with x402.
    const fn metered(resource: Resource) -> Needs {
        Needs {
            payment: Payment::PerRequest,
            ..Needs::credential(Requirement::Permission(resource), Scopes::OrganizationOrApp)
                .with_body(BodyUse::Json)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    /// `OPTIONS` on anything under `/api/`.
    CorsPreflight,
    Whoami,
    Dashboard,
    Credits,
    ListApiKeys,
    CreateApiKey,
    UpdateApiKey(Uuid),
    DeleteApiKey(Uuid),
    RegenerateApiKey(Uuid),
    SiweNonce,
    SiweVerify,
    SiwsNonce,
    SiwsVerify,
    Logout,
    ListModels,
    /// `GET /api/v1/models/{id}`; the id (which may hold `/`) is read from the path.
    GetModel,
    ChatCompletions,
    Embeddings,
    ImageGenerations,
    Usage,
    ListApps,
    CreateApp,
    CheckAppName,
    GetApp(Uuid),
    UpdateApp(Uuid),
    DeleteApp(Uuid),
    RegenerateAppKey(Uuid),
    AppAnalytics(Uuid),
    AppUsers(Uuid),
    AppMonetization(Uuid),
    SetAppMonetization(Uuid),
    AppEarnings(Uuid),
    WithdrawAppEarnings(Uuid),
    AppWebhook(Uuid),
    AppDomains(Uuid),
    AddAppDomain(Uuid),
    DeleteAppDomain(Uuid),
    VerifyAppDomain(Uuid),
    AppDomainStatus(Uuid),
    /// `GET /api/v1/domains/allowed?domain=`: public, from memory, no rate-limit token.
    DomainsAllowed,
    /// `GET /api/v1/ca.pem`: the local CA's certificate, public.
    CaPem,
    /// Any request whose `Host` is an app's subdomain or verified domain (SPEC §11).
    AppPage(Uuid),
    /// `POST /api/auth/key-session {apiKey}`: an API key exchanged for a session (SPEC §13).
    KeySession,
    /// `GET /`: to the dashboard.
    Root,
    /// `GET /api/openapi.json`: the API document (SPEC §14), public.
    OpenApi,
    /// `GET /dashboard/sign-in`: the sign-in page (public).
    DashboardSignIn,
    /// `POST /dashboard/sign-in`: the key sign-in form (like a sign-in: the client address's
    /// bucket, our origin when one is sent).
    DashboardSignInForm,
    /// `GET /dashboard` and every page under it (SPEC §13).
    DashboardPage,
    /// `POST /dashboard/...`: a dashboard form.
    DashboardForm,
    /// `GET /.well-known/acme-challenge/{token}` on any host: the ACME issuer's HTTP-01 answer.
    AcmeChallenge,
    SetAppWebhook(Uuid),
    RotateWebhookSecret(Uuid),
    TestWebhook(Uuid),
    WebhookDeliveries(Uuid),
    /// The delivery's id is `msg_<hex>`, read by the handler.
    Redeliver(Uuid),
    /// `POST /api/v1/topup/{amount}`: the amount in micro-dollars, `None` when it is not a
    /// dollar amount.
    Topup(Option<i64>),
    /// The catch-all: a path no route knows.
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// Most path segments any route has; deeper paths are 404 without further work.
const MAX_SEGMENTS: usize = 8;

const GET: &[Method] = &[Method::GET, Method::HEAD];
const GET_ALLOW: &str = "GET, HEAD";
const GET_POST_ALLOW: &str = "GET, HEAD, POST";
const GET_POST_DELETE_ALLOW: &str = "GET, HEAD, POST, DELETE";
const PATCH_DELETE_ALLOW: &str = "PATCH, DELETE";
const GET_PATCH_DELETE_ALLOW: &str = "GET, HEAD, PATCH, DELETE";
const POST: &[Method] = &[Method::POST];
const POST_ALLOW: &str = "POST";

impl Route {
    /// Stable, low-cardinality label for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::CorsPreflight => "cors_preflight",
            Route::Whoami => "auth_whoami",
            Route::Dashboard => "dashboard",
            Route::Credits => "credits",
            Route::ListApiKeys => "api_keys_list",
            Route::CreateApiKey => "api_keys_create",
            Route::UpdateApiKey(_) => "api_keys_update",
            Route::DeleteApiKey(_) => "api_keys_delete",
            Route::RegenerateApiKey(_) => "api_keys_regenerate",
            Route::SiweNonce => "siwe_nonce",
            Route::SiweVerify => "siwe_verify",
            Route::SiwsNonce => "siws_nonce",
            Route::SiwsVerify => "siws_verify",
            Route::Logout => "logout",
            Route::Topup(_) => "topup",
            Route::ListModels => "models_list",
            Route::GetModel => "models_get",
            Route::ChatCompletions => "chat_completions",
            Route::Embeddings => "embeddings",
            Route::ImageGenerations => "images_generations",
            Route::Usage => "usage",
            Route::ListApps => "apps_list",
            Route::CreateApp => "apps_create",
            Route::CheckAppName => "apps_check_name",
            Route::GetApp(_) => "apps_get",
            Route::UpdateApp(_) => "apps_update",
            Route::DeleteApp(_) => "apps_delete",
            Route::RegenerateAppKey(_) => "apps_regenerate_key",
            Route::AppAnalytics(_) => "apps_analytics",
            Route::AppUsers(_) => "apps_users",
            Route::AppMonetization(_) => "apps_monetization_get",
            Route::SetAppMonetization(_) => "apps_monetization_set",
            Route::AppEarnings(_) => "apps_earnings",
            Route::WithdrawAppEarnings(_) => "apps_earnings_withdraw",
            Route::AppWebhook(_) => "apps_webhook_get",
            Route::AppDomains(_) => "apps_domains_list",
            Route::AddAppDomain(_) => "apps_domains_add",
            Route::DeleteAppDomain(_) => "apps_domains_delete",
            Route::VerifyAppDomain(_) => "apps_domains_verify",
            Route::AppDomainStatus(_) => "apps_domains_status",
            Route::DomainsAllowed => "domains_allowed",
            Route::AppPage(_) => "app_page",
            Route::AcmeChallenge => "acme_challenge",
            Route::KeySession => "key_session",
            Route::Root => "root",
            Route::OpenApi => "openapi",
            Route::DashboardSignIn => "dashboard_sign_in",
            Route::DashboardSignInForm => "dashboard_sign_in_form",
            Route::DashboardPage => "dashboard_page",
            Route::DashboardForm => "dashboard_form",
            Route::CaPem => "ca_pem",
            Route::SetAppWebhook(_) => "apps_webhook_set",
            Route::RotateWebhookSecret(_) => "apps_webhook_rotate_secret",
            Route::TestWebhook(_) => "apps_webhook_test",
            Route::WebhookDeliveries(_) => "apps_webhook_deliveries",
            Route::Redeliver(_) => "apps_webhook_redeliver",
            Route::NotFound => "not_found",
            Route::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// What the route needs (module docs). No default arm: a new route cannot exist without
    /// declaring who may call it.
    pub const fn needs(self) -> Needs {
        use Requirement::{AnyCredential, Unrestricted};
        use Scopes::{Organization, OrganizationOrApp};
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => Needs::public(),
            Route::CorsPreflight | Route::MethodNotAllowed { .. } => Needs::public(),
            Route::DomainsAllowed | Route::AppPage(_) | Route::CaPem => Needs::public(),
            // The CA asks from its own addresses, a few times per order: no credential, no bucket.
            Route::AcmeChallenge => Needs::public(),
            Route::Root | Route::DashboardSignIn | Route::OpenApi => Needs::public(),
            Route::DashboardSignInForm => Needs {
                caller: Caller::ClientAddress,
                body: BodyUse::Json,
                origins: Origins::OursWhenPresent,
                ..Needs::public()
            },
            // The organization's own credentials (a session, a key, a wallet); an app's key never.
            Route::DashboardPage => Needs::credential(AnyCredential, Organization),
            Route::DashboardForm => {
                Needs::credential(AnyCredential, Organization).with_body(BodyUse::Json)
            }
            // Logout acts on the cookie it is sent with (and checks its origin) or on nothing;
            // it may write, so it draws on the client address's bucket (SPEC §8).
            Route::Logout => Needs {
                caller: Caller::ClientAddress,
                ..Needs::public()
            },
            // A path no route knows: 401 without a credential, 404 to any valid one (SPEC §2),
            // so a restricted key is never told to widen itself for a route that does not exist.
            Route::NotFound => Needs::credential(AnyCredential, OrganizationOrApp),
            Route::Whoami => Needs::credential(AnyCredential, OrganizationOrApp),
            Route::Dashboard | Route::Credits => Needs::credential(AnyCredential, Organization),
            Route::ListModels | Route::GetModel | Route::Usage => {
                Needs::credential(AnyCredential, OrganizationOrApp)
            }
            // App management: the organization's credentials holding `apps`; an app's key never.
            Route::ListApps => {
                Needs::credential(Requirement::Permission(Resource::APPS), Organization)
            }
            Route::CreateApp | Route::CheckAppName => {
                Needs::credential(Requirement::Permission(Resource::APPS), Organization)
                    .with_body(BodyUse::Json)
            }
            // One app's management: app keys pass the pipeline so that another organization's app
            // is 404 for them too (SPEC §10); the handler then refuses them 403 on their own
            // organization's apps, their own included.
            Route::DeleteApp(_)
            | Route::RegenerateAppKey(_)
            | Route::RotateWebhookSecret(_)
            | Route::TestWebhook(_)
            | Route::Redeliver(_) => Needs::credential(
                Requirement::PermissionOrAppKey(Resource::APPS),
                OrganizationOrApp,
            ),
            Route::UpdateApp(_)
            | Route::AddAppDomain(_)
            | Route::DeleteAppDomain(_)
            | Route::VerifyAppDomain(_)
            | Route::AppDomainStatus(_)
            | Route::SetAppWebhook(_)
            | Route::SetAppMonetization(_)
            | Route::WithdrawAppEarnings(_) => Needs::credential(
                Requirement::PermissionOrAppKey(Resource::APPS),
                OrganizationOrApp,
            )
            .with_body(BodyUse::Json),
            Route::GetApp(_)
            | Route::AppAnalytics(_)
            | Route::AppUsers(_)
            | Route::AppEarnings(_)
            | Route::AppWebhook(_)
            | Route::AppDomains(_)
            | Route::WebhookDeliveries(_)
            | Route::AppMonetization(_) => Needs::credential(
                Requirement::PermissionOrAppKey(Resource::APPS),
                OrganizationOrApp,
            ),
            Route::ChatCompletions => Needs::metered(Resource::CHAT),
            Route::Embeddings => Needs::metered(Resource::EMBEDDINGS),
            Route::ImageGenerations => Needs::metered(Resource::IMAGES),
            Route::ListApiKeys | Route::DeleteApiKey(_) | Route::RegenerateApiKey(_) => {
                Needs::credential(Unrestricted, Organization)
            }
            Route::CreateApiKey | Route::UpdateApiKey(_) => {
                Needs::credential(Unrestricted, Organization).with_body(BodyUse::Json)
            }
            Route::SiweNonce | Route::SiwsNonce => Needs {
                caller: Caller::ClientAddress,
                ..Needs::public()
            },
            Route::SiweVerify | Route::SiwsVerify | Route::KeySession => Needs {
                caller: Caller::ClientAddress,
                body: BodyUse::JsonOnly,
                origins: Origins::OursWhenPresent,
                ..Needs::public()
            },
            Route::Topup(_) => Needs {
                payment: Payment::Required,
                new_wallets: NewWallets::AfterPayment,
                ..Needs::credential(AnyCredential, Organization).with_body(BodyUse::Json)
            },
        }
    }
}

fn only(method: &Method, allowed: &[Method], allow: &'static str, route: Route) -> Route {
    if allowed.contains(method) {
        route
    } else {
        Route::MethodNotAllowed { allow }
    }
}

/// Splits `/a/b/c` into segments; `None` for a path that no route can match (no leading slash,
/// empty inner segments, too deep). One trailing slash is ignored.
fn segments(path: &str) -> Option<([&str; MAX_SEGMENTS], usize)> {
    let rest = path.strip_prefix('/')?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut out = [""; MAX_SEGMENTS];
    let mut count = 0;
    if rest.is_empty() {
        return Some((out, 0));
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return None;
        }
        *out.get_mut(count)? = segment;
        count += 1;
    }
    Some((out, count))
}

/// An id segment: a UUID in its hyphenated form, else no route matches.
fn id(segment: &str) -> Option<Uuid> {
    if segment.len() != 36 {
        return None;
    }
    Uuid::try_parse(segment).ok()
}

/// A dollar amount segment (`10`, `2.5`) in micro-dollars.
fn dollars(segment: &str) -> Option<i64> {
    if segment.len() > 16 {
        return None;
    }
    crate::money::parse_dollars(segment).filter(|m| *m > 0)
}

/// The whole routing table.
/// The HTTP-01 path, answered on every host before host routing (SPEC §11).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

pub fn parse_route(method: &Method, path: &str) -> Route {
    let Some((segs, count)) = segments(path) else {
        return Route::NotFound;
    };
    let segs = segs.get(..count).unwrap_or(&[]);
    if method == Method::OPTIONS && segs.first() == Some(&"api") {
        return Route::CorsPreflight;
    }
    match segs {
        ["healthz"] => only(method, GET, GET_ALLOW, Route::Healthz),
        [] => only(method, GET, GET_ALLOW, Route::Root),
        ["dashboard"] => only(method, GET, GET_ALLOW, Route::DashboardPage),
        ["dashboard", "sign-in"] => match *method {
            Method::GET | Method::HEAD => Route::DashboardSignIn,
            Method::POST => Route::DashboardSignInForm,
            _ => Route::MethodNotAllowed {
                allow: GET_POST_ALLOW,
            },
        },
        ["dashboard", ..] => match *method {
            Method::GET | Method::HEAD => Route::DashboardPage,
            Method::POST => Route::DashboardForm,
            _ => Route::MethodNotAllowed {
                allow: GET_POST_ALLOW,
            },
        },
        [".well-known", "acme-challenge", _] => only(method, GET, GET_ALLOW, Route::AcmeChallenge),
        ["readyz"] => only(method, GET, GET_ALLOW, Route::Readyz),
        ["metrics"] => only(method, GET, GET_ALLOW, Route::Metrics),
        ["api", "auth", "siwe", "nonce"] => only(method, GET, GET_ALLOW, Route::SiweNonce),
        ["api", "auth", "siwe", "verify"] => only(method, POST, POST_ALLOW, Route::SiweVerify),
        ["api", "auth", "siws", "nonce"] => only(method, GET, GET_ALLOW, Route::SiwsNonce),
        ["api", "auth", "siws", "verify"] => only(method, POST, POST_ALLOW, Route::SiwsVerify),
        ["api", "auth", "logout"] => only(method, POST, POST_ALLOW, Route::Logout),
        ["api", "auth", "key-session"] => only(method, POST, POST_ALLOW, Route::KeySession),
        ["api", "openapi.json"] => only(method, GET, GET_ALLOW, Route::OpenApi),
        ["api", "v1", rest @ ..] => match rest {
            ["auth", "whoami"] => only(method, GET, GET_ALLOW, Route::Whoami),
            ["dashboard"] => only(method, GET, GET_ALLOW, Route::Dashboard),
            ["credits"] => only(method, GET, GET_ALLOW, Route::Credits),
            ["api-keys"] => match *method {
                Method::GET | Method::HEAD => Route::ListApiKeys,
                Method::POST => Route::CreateApiKey,
                _ => Route::MethodNotAllowed {
                    allow: GET_POST_ALLOW,
                },
            },
            ["api-keys", key] => match (id(key), method.clone()) {
                (None, _) => Route::NotFound,
                (Some(key), Method::PATCH) => Route::UpdateApiKey(key),
                (Some(key), Method::DELETE) => Route::DeleteApiKey(key),
                (Some(_), _) => Route::MethodNotAllowed {
                    allow: PATCH_DELETE_ALLOW,
                },
            },
            ["models"] => only(method, GET, GET_ALLOW, Route::ListModels),
            ["models", _, ..] => only(method, GET, GET_ALLOW, Route::GetModel),
            ["chat", "completions"] => only(method, POST, POST_ALLOW, Route::ChatCompletions),
            ["embeddings"] => only(method, POST, POST_ALLOW, Route::Embeddings),
            ["images", "generations"] => only(method, POST, POST_ALLOW, Route::ImageGenerations),
            ["usage"] => only(method, GET, GET_ALLOW, Route::Usage),
            ["apps"] => match *method {
                Method::GET | Method::HEAD => Route::ListApps,
                Method::POST => Route::CreateApp,
                _ => Route::MethodNotAllowed {
                    allow: GET_POST_ALLOW,
                },
            },
            ["apps", "check-name"] => only(method, POST, POST_ALLOW, Route::CheckAppName),
            ["apps", app] => match (id(app), method.clone()) {
                (None, _) => Route::NotFound,
                (Some(app), Method::GET | Method::HEAD) => Route::GetApp(app),
                (Some(app), Method::PATCH) => Route::UpdateApp(app),
                (Some(app), Method::DELETE) => Route::DeleteApp(app),
                (Some(_), _) => Route::MethodNotAllowed {
                    allow: GET_PATCH_DELETE_ALLOW,
                },
            },
            ["apps", app, "analytics"] => match id(app) {
                Some(app) => only(method, GET, GET_ALLOW, Route::AppAnalytics(app)),
                None => Route::NotFound,
            },
            ["apps", app, "users"] => match id(app) {
                Some(app) => only(method, GET, GET_ALLOW, Route::AppUsers(app)),
                None => Route::NotFound,
            },
            ["apps", app, "monetization"] => match (id(app), method.clone()) {
                (None, _) => Route::NotFound,
                (Some(app), Method::GET | Method::HEAD) => Route::AppMonetization(app),
                (Some(app), Method::POST) => Route::SetAppMonetization(app),
                (Some(_), _) => Route::MethodNotAllowed {
                    allow: GET_POST_ALLOW,
                },
            },
            ["domains", "allowed"] => only(method, GET, GET_ALLOW, Route::DomainsAllowed),
            ["ca.pem"] => only(method, GET, GET_ALLOW, Route::CaPem),
            ["apps", app, "domains"] => match (id(app), method.clone()) {
                (None, _) => Route::NotFound,
                (Some(app), Method::GET | Method::HEAD) => Route::AppDomains(app),
                (Some(app), Method::POST) => Route::AddAppDomain(app),
                (Some(app), Method::DELETE) => Route::DeleteAppDomain(app),
                (Some(_), _) => Route::MethodNotAllowed {
                    allow: GET_POST_DELETE_ALLOW,
                },
            },
            ["apps", app, "domains", "verify"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::VerifyAppDomain(app)),
                None => Route::NotFound,
            },
            ["apps", app, "domains", "status"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::AppDomainStatus(app)),
                None => Route::NotFound,
            },
            ["apps", app, "webhook"] => match (id(app), method.clone()) {
                (None, _) => Route::NotFound,
                (Some(app), Method::GET | Method::HEAD) => Route::AppWebhook(app),
                (Some(app), Method::POST) => Route::SetAppWebhook(app),
                (Some(_), _) => Route::MethodNotAllowed {
                    allow: GET_POST_ALLOW,
                },
            },
            ["apps", app, "webhook", "rotate-secret"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::RotateWebhookSecret(app)),
                None => Route::NotFound,
            },
            ["apps", app, "webhook", "test"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::TestWebhook(app)),
                None => Route::NotFound,
            },
            ["apps", app, "webhook", "deliveries"] => match id(app) {
                Some(app) => only(method, GET, GET_ALLOW, Route::WebhookDeliveries(app)),
                None => Route::NotFound,
            },
            ["apps", app, "webhook", "deliveries", _, "redeliver"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::Redeliver(app)),
                None => Route::NotFound,
            },
            ["apps", app, "earnings"] => match id(app) {
                Some(app) => only(method, GET, GET_ALLOW, Route::AppEarnings(app)),
                None => Route::NotFound,
            },
            ["apps", app, "earnings", "withdraw"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::WithdrawAppEarnings(app)),
                None => Route::NotFound,
            },
            ["apps", app, "regenerate-api-key"] => match id(app) {
                Some(app) => only(method, POST, POST_ALLOW, Route::RegenerateAppKey(app)),
                None => Route::NotFound,
            },
            ["topup", amount] => only(method, POST, POST_ALLOW, Route::Topup(dollars(amount))),
            ["api-keys", key, "regenerate"] => match id(key) {
                Some(key) => only(method, POST, POST_ALLOW, Route::RegenerateApiKey(key)),
                None => Route::NotFound,
            },
            _ => Route::NotFound,
        },
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_routes() {
        assert_eq!(parse_route(&Method::GET, "/healthz"), Route::Healthz);
        assert_eq!(parse_route(&Method::HEAD, "/healthz/"), Route::Healthz);
        assert_eq!(parse_route(&Method::GET, "/readyz"), Route::Readyz);
        assert_eq!(parse_route(&Method::GET, "/metrics"), Route::Metrics);
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/auth/whoami"),
            Route::Whoami
        );
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        assert_eq!(
            parse_route(&Method::POST, "/healthz"),
            Route::MethodNotAllowed { allow: GET_ALLOW }
        );
        assert_eq!(
            parse_route(&Method::DELETE, "/api/v1/auth/whoami"),
            Route::MethodNotAllowed { allow: GET_ALLOW }
        );
    }

    #[test]
    fn unknown_and_odd_paths_are_404() {
        // `/` is the dashboard's door (SPEC §13).
        assert_eq!(parse_route(&Method::GET, "/"), Route::Root);
        assert_eq!(
            parse_route(&Method::GET, "/dashboard/apps/x"),
            Route::DashboardPage
        );
        assert_eq!(
            parse_route(&Method::POST, "/dashboard/keys"),
            Route::DashboardForm
        );
        assert_eq!(
            parse_route(&Method::POST, "/dashboard/sign-in"),
            Route::DashboardSignInForm
        );
        for path in [
            "",
            "healthz",
            "//healthz",
            "/healthz//",
            "/api/v1/nope",
            "/HEALTHZ",
            "/healthz?x=1",
            "/a/b/c/d/e/f/g/h/i/j",
            "/api//v1/auth/whoami",
        ] {
            assert_eq!(parse_route(&Method::GET, path), Route::NotFound, "{path:?}");
        }
    }

    #[test]
    fn preflight_covers_api_only() {
        assert_eq!(
            parse_route(&Method::OPTIONS, "/api/v1/anything"),
            Route::CorsPreflight
        );
        assert_eq!(
            parse_route(&Method::OPTIONS, "/healthz"),
            Route::MethodNotAllowed { allow: GET_ALLOW }
        );
    }

    #[test]
    fn api_key_routes() {
        let id = "6f1c1f52-4f0e-4d8e-9a53-0c6f1b3f9a11";
        let uuid = Uuid::parse_str(id).unwrap();
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/api-keys"),
            Route::ListApiKeys
        );
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/api-keys"),
            Route::CreateApiKey
        );
        assert_eq!(
            parse_route(&Method::PUT, "/api/v1/api-keys"),
            Route::MethodNotAllowed {
                allow: GET_POST_ALLOW
            }
        );
        assert_eq!(
            parse_route(&Method::PATCH, &format!("/api/v1/api-keys/{id}")),
            Route::UpdateApiKey(uuid)
        );
        assert_eq!(
            parse_route(&Method::DELETE, &format!("/api/v1/api-keys/{id}")),
            Route::DeleteApiKey(uuid)
        );
        assert_eq!(
            parse_route(&Method::GET, &format!("/api/v1/api-keys/{id}")),
            Route::MethodNotAllowed {
                allow: PATCH_DELETE_ALLOW
            }
        );
        assert_eq!(
            parse_route(&Method::POST, &format!("/api/v1/api-keys/{id}/regenerate")),
            Route::RegenerateApiKey(uuid)
        );
        for bad in [
            "not-a-uuid",
            "6f1c1f524f0e4d8e9a530c6f1b3f9a11",
            "{6f1c1f52-4f0e-4d8e-9a53-0c6f1b3f9a1}",
        ] {
            assert_eq!(
                parse_route(&Method::DELETE, &format!("/api/v1/api-keys/{bad}")),
                Route::NotFound
            );
        }
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/dashboard"),
            Route::Dashboard
        );
        assert_eq!(parse_route(&Method::GET, "/api/v1/credits"), Route::Credits);
    }

    #[test]
    fn gateway_routes() {
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/models"),
            Route::ListModels
        );
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/models/gpt-4o"),
            Route::GetModel
        );
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/models/openai/gpt-4o"),
            Route::GetModel
        );
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/chat/completions"),
            Route::ChatCompletions
        );
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/chat/completions"),
            Route::MethodNotAllowed { allow: POST_ALLOW }
        );
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/embeddings"),
            Route::Embeddings
        );
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/images/generations"),
            Route::ImageGenerations
        );
        assert_eq!(parse_route(&Method::GET, "/api/v1/usage"), Route::Usage);
        let chat = Route::ChatCompletions.needs();
        assert_eq!(chat.payment, Payment::PerRequest);
        assert_eq!(
            chat.caller,
            Caller::Credential(Requirement::Permission(Resource::CHAT))
        );
        assert_eq!(chat.scopes, Scopes::OrganizationOrApp);
        assert_eq!(chat.body, BodyUse::Json);
    }

    #[test]
    fn app_routes() {
        let id = "6f1c1f52-4f0e-4d8e-9a53-0c6f1b3f9a11";
        let uuid = Uuid::parse_str(id).unwrap();
        assert_eq!(parse_route(&Method::GET, "/api/v1/apps"), Route::ListApps);
        assert_eq!(parse_route(&Method::POST, "/api/v1/apps"), Route::CreateApp);
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/apps/check-name"),
            Route::CheckAppName
        );
        assert_eq!(
            parse_route(&Method::GET, &format!("/api/v1/apps/{id}")),
            Route::GetApp(uuid)
        );
        assert_eq!(
            parse_route(&Method::PATCH, &format!("/api/v1/apps/{id}")),
            Route::UpdateApp(uuid)
        );
        assert_eq!(
            parse_route(&Method::DELETE, &format!("/api/v1/apps/{id}")),
            Route::DeleteApp(uuid)
        );
        assert_eq!(
            parse_route(
                &Method::POST,
                &format!("/api/v1/apps/{id}/regenerate-api-key")
            ),
            Route::RegenerateAppKey(uuid)
        );
        assert_eq!(
            parse_route(&Method::GET, "/api/v1/apps/nope"),
            Route::NotFound
        );
        assert_eq!(Route::CreateApp.needs().scopes, Scopes::Organization);
        assert_eq!(
            Route::GetApp(uuid).needs().scopes,
            Scopes::OrganizationOrApp
        );
    }

    #[test]
    fn declared_needs() {
        assert_eq!(
            Route::Whoami.needs().caller,
            Caller::Credential(Requirement::AnyCredential)
        );
        assert_eq!(Route::Healthz.needs().caller, Caller::Public);
        assert_eq!(
            Route::ListApiKeys.needs().caller,
            Caller::Credential(Requirement::Unrestricted)
        );
        assert_eq!(Route::ListApiKeys.needs().scopes, Scopes::Organization);
        // The catch-all answers any valid credential (404), and nothing without one (401).
        assert_eq!(
            Route::NotFound.needs().caller,
            Caller::Credential(Requirement::AnyCredential)
        );
        assert_eq!(Route::SiweVerify.needs().body, BodyUse::JsonOnly);
        assert_eq!(Route::SiweVerify.needs().origins, Origins::OursWhenPresent);
        assert_eq!(Route::Topup(None).needs().payment, Payment::Required);
        assert_eq!(
            Route::Topup(None).needs().new_wallets,
            NewWallets::AfterPayment
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_is_total(method in "[A-Z]{1,8}", path in "(/[a-z0-9%._-]{0,12}){0,10}/?") {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let route = parse_route(&method, &path);
            prop_assert_eq!(route, parse_route(&method, &path));
            let _ = (route.name(), route.needs());
            if let Route::MethodNotAllowed { allow } = route {
                prop_assert!(!allow.split(", ").any(|m| m == method.as_str()));
            }
        }

        #[test]
        fn trailing_slash_is_ignored(path in "(/[a-z]{1,6}){1,5}") {
            prop_assert_eq!(
                parse_route(&Method::GET, &path),
                parse_route(&Method::GET, &format!("{path}/"))
            );
        }
    }
}
