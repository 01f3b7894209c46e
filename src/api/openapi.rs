//! `GET /api/openapi.json` (SPEC §14): an OpenAPI 3.1 document of every route, built from one
//! table ([`OPERATIONS`]). A test routes every operation's method and path through
//! [`crate::web::route::parse_route`] and checks it lands on the route of that name, and that
//! every route the router knows has an operation: the document cannot drift from the code.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::api::input::{
    MAX_APP_DESCRIPTION, MAX_KEY_DESCRIPTION, MAX_NAME, MAX_RATE_LIMIT, MAX_TOKEN,
};
use crate::gateway::models::Kind;
use crate::state::AppState;
use crate::web::body::{Body, full};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential.
    Public,
    /// An organization's or app's credential: key, bearer, session, wallet headers.
    Credential,
    /// A credential, or an x402 payment instead (pay per request).
    CredentialOrPayment,
    /// An x402 payment (a credential, if any, names whom to credit).
    Payment,
}

/// What an operation's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    None,
    /// JSON, with these required properties (strings unless said otherwise by the schema
    /// name in [`body_schema`]).
    Json(&'static str),
    /// A dashboard form, `application/x-www-form-urlencoded`: `sign_in`, or `page` (whose
    /// fields are the page's own form's).
    Form(&'static str),
}

/// What a success answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Json(u16),
    /// 201 when it made something, 200 when it was there already (adding a domain again).
    CreatedOrFound,
    Html,
    /// A redirect (303).
    Redirect,
    Text(&'static str),
    /// The chat route: JSON, or an event stream when `stream` is true.
    JsonOrStream,
}

#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    /// With `{id}`, `{key}`, `{delivery}`, `{amount}`, `{model}`, `{token}`, `{page}` parameters.
    pub path: &'static str,
    /// The route's name (`Route::name`): the operation id.
    pub id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub body: Request,
    pub answer: Answer,
}

// One row of the table, positionally, so the table reads as a table.
#[allow(clippy::too_many_arguments)]
const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    access: Access,
    body: Request,
    answer: Answer,
) -> Operation {
    Operation {
        method,
        path,
        id,
        tag,
        summary,
        access,
        body,
        answer,
    }
}

use Access::{Credential, CredentialOrPayment, Payment, Public};
use Answer::{CreatedOrFound, Html, Json, JsonOrStream, Redirect, Text};
use Request::{Form, Json as Body_, None as NoBody};

/// Every operation of the contract.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/healthz",
        "healthz",
        "operations",
        "Liveness",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/readyz",
        "readyz",
        "operations",
        "Readiness (the store answers)",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/metrics",
        "metrics",
        "operations",
        "Prometheus metrics",
        Public,
        NoBody,
        Text("text/plain"),
    ),
    op(
        "get",
        "/api/openapi.json",
        "openapi",
        "operations",
        "This document",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/auth/siwe/nonce",
        "siwe_nonce",
        "sign-in",
        "A Sign-In With Ethereum nonce (and the message for `address`)",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/auth/siwe/verify",
        "siwe_verify",
        "sign-in",
        "Sign in with an EIP-4361 message and its signature",
        Public,
        Body_("signin"),
        Json(200),
    ),
    op(
        "get",
        "/api/auth/siws/nonce",
        "siws_nonce",
        "sign-in",
        "A Sign-In With Solana nonce",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/auth/siws/verify",
        "siws_verify",
        "sign-in",
        "Sign in with a Solana message and its signature",
        Public,
        Body_("signin"),
        Json(200),
    ),
    op(
        "post",
        "/api/auth/logout",
        "logout",
        "sign-in",
        "End the session of the cookie",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/auth/key-session",
        "key_session",
        "sign-in",
        "Exchange an unrestricted live key for a session cookie",
        Public,
        Body_("key_session"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/auth/whoami",
        "auth_whoami",
        "identity",
        "Who the credential is",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/dashboard",
        "dashboard",
        "identity",
        "The organization at a glance",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/credits",
        "credits",
        "credits",
        "Balance and ledger transactions",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/topup/{amount}",
        "topup",
        "credits",
        "Buy credits with an x402 payment",
        Payment,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/api-keys",
        "api_keys_list",
        "keys",
        "The organization's keys",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/api-keys",
        "api_keys_create",
        "keys",
        "Create a key (shown once)",
        Credential,
        Body_("key"),
        Json(201),
    ),
    op(
        "patch",
        "/api/v1/api-keys/{key}",
        "api_keys_update",
        "keys",
        "Change a key",
        Credential,
        Body_("key_patch"),
        Json(200),
    ),
    op(
        "delete",
        "/api/v1/api-keys/{key}",
        "api_keys_delete",
        "keys",
        "Revoke a key",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/api-keys/{key}/regenerate",
        "api_keys_regenerate",
        "keys",
        "A new secret for a key (shown once)",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/models",
        "models_list",
        "gateway",
        "The models",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/models/{model}",
        "models_get",
        "gateway",
        "One model",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/chat/completions",
        "chat_completions",
        "gateway",
        "OpenAI-compatible chat completion, metered",
        CredentialOrPayment,
        Body_("chat"),
        JsonOrStream,
    ),
    op(
        "post",
        "/api/v1/embeddings",
        "embeddings",
        "gateway",
        "OpenAI-compatible embeddings, metered",
        CredentialOrPayment,
        Body_("embeddings"),
        Json(200),
    ),
    op(
        "post",
        "/api/v1/images/generations",
        "images_generations",
        "gateway",
        "OpenAI-compatible image generation, metered",
        CredentialOrPayment,
        Body_("images"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/usage",
        "usage",
        "usage",
        "A month's usage by day, model, key and app",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps",
        "apps_list",
        "apps",
        "The organization's apps",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps",
        "apps_create",
        "apps",
        "Create an app (its key shown once)",
        Credential,
        Body_("app"),
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/check-name",
        "apps_check_name",
        "apps",
        "Whether an app name is free",
        Credential,
        Body_("name"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}",
        "apps_get",
        "apps",
        "One app",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "patch",
        "/api/v1/apps/{id}",
        "apps_update",
        "apps",
        "Change an app",
        Credential,
        Body_("app_patch"),
        Json(200),
    ),
    op(
        "delete",
        "/api/v1/apps/{id}",
        "apps_delete",
        "apps",
        "Delete an app",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/regenerate-api-key",
        "apps_regenerate_key",
        "apps",
        "A new key for an app (shown once)",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/analytics",
        "apps_analytics",
        "apps",
        "An app's requests, costs and users",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/users",
        "apps_users",
        "apps",
        "An app's end users",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/monetization",
        "apps_monetization_get",
        "apps",
        "An app's prices",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/monetization",
        "apps_monetization_set",
        "apps",
        "Set an app's prices",
        Credential,
        Body_("monetization"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/earnings",
        "apps_earnings",
        "apps",
        "An app's earnings",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/earnings/withdraw",
        "apps_earnings_withdraw",
        "apps",
        "Withdraw earnings into credits",
        Credential,
        Body_("withdraw"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/webhook",
        "apps_webhook_get",
        "webhooks",
        "An app's webhook",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/webhook",
        "apps_webhook_set",
        "webhooks",
        "Set an app's webhook",
        Credential,
        Body_("webhook"),
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/webhook/rotate-secret",
        "apps_webhook_rotate_secret",
        "webhooks",
        "A new signing secret (both sign for 24 h)",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/webhook/test",
        "apps_webhook_test",
        "webhooks",
        "Queue a test event",
        Credential,
        NoBody,
        Json(202),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/webhook/deliveries",
        "apps_webhook_deliveries",
        "webhooks",
        "The delivery log",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/webhook/deliveries/{delivery}/redeliver",
        "apps_webhook_redeliver",
        "webhooks",
        "Send a delivery again",
        Credential,
        NoBody,
        Json(202),
    ),
    op(
        "get",
        "/api/v1/apps/{id}/domains",
        "apps_domains_list",
        "domains",
        "An app's domains",
        Credential,
        NoBody,
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/domains",
        "apps_domains_add",
        "domains",
        "Claim a domain (its TXT record)",
        Credential,
        Body_("domain"),
        CreatedOrFound,
    ),
    op(
        "delete",
        "/api/v1/apps/{id}/domains",
        "apps_domains_delete",
        "domains",
        "Release a domain",
        Credential,
        Body_("domain"),
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/domains/verify",
        "apps_domains_verify",
        "domains",
        "Look the TXT record up",
        Credential,
        Body_("domain"),
        Json(200),
    ),
    op(
        "post",
        "/api/v1/apps/{id}/domains/status",
        "apps_domains_status",
        "domains",
        "A domain's verification and certificate",
        Credential,
        Body_("domain"),
        Json(200),
    ),
    op(
        "get",
        "/api/v1/domains/allowed",
        "domains_allowed",
        "domains",
        "Whether this server serves a host (a proxy's on-demand TLS check)",
        Public,
        NoBody,
        Json(200),
    ),
    op(
        "get",
        "/api/v1/ca.pem",
        "ca_pem",
        "domains",
        "The local CA's certificate",
        Public,
        NoBody,
        Text("application/x-pem-file"),
    ),
    op(
        "get",
        "/.well-known/acme-challenge/{token}",
        "acme_challenge",
        "domains",
        "An ACME HTTP-01 answer (any host)",
        Public,
        NoBody,
        Text("application/octet-stream"),
    ),
    op(
        "get",
        "/",
        "root",
        "dashboard",
        "To the dashboard",
        Public,
        NoBody,
        Redirect,
    ),
    op(
        "get",
        "/dashboard/sign-in",
        "dashboard_sign_in",
        "dashboard",
        "The sign-in page",
        Public,
        NoBody,
        Html,
    ),
    op(
        "post",
        "/dashboard/sign-in",
        "dashboard_sign_in_form",
        "dashboard",
        "Sign in with a key (form)",
        Public,
        Form("sign_in"),
        Redirect,
    ),
    // The overview: the same route as its pages (the page sign-in leads to).
    op(
        "get",
        "/dashboard",
        "dashboard_page",
        "dashboard",
        "The dashboard's overview",
        Credential,
        NoBody,
        Html,
    ),
    op(
        "get",
        "/dashboard/{page}",
        "dashboard_page",
        "dashboard",
        "A dashboard page",
        Credential,
        NoBody,
        Html,
    ),
    op(
        "post",
        "/dashboard/{page}",
        "dashboard_form",
        "dashboard",
        "A dashboard form",
        Credential,
        Form("page"),
        Html,
    ),
];

/// Routes with no operation of their own: answers of the router itself, and the app page, which
/// is chosen by `Host`, not by path.
pub const NOT_OPERATIONS: &[&str] = &[
    "cors_preflight",
    "not_found",
    "method_not_allowed",
    "app_page",
];

fn error_ref() -> Value {
    json!({ "$ref": "#/components/schemas/Error" })
}

/// What the document says that depends on the server: its URL, its apps domain and its models.
#[derive(Debug, Clone)]
pub struct Facts {
    pub public_url: String,
    pub apps_domain: String,
    /// Served model ids, each with its kind and (embedding models) its dimensions.
    pub models: Vec<(String, Kind, u32)>,
    /// The x402 top-up amounts offered, in dollars (`10`, `0.5`).
    pub topup_amounts: Vec<String>,
}

impl Facts {
    pub fn of(state: &AppState) -> Facts {
        Facts {
            public_url: state.config.public_url.url.clone(),
            apps_domain: state.hosts.apps_domain().to_string(),
            models: state
                .gateway
                .config
                .models
                .iter()
                .map(|m| (m.id.clone(), m.kind, m.dimensions))
                .collect(),
            topup_amounts: state
                .config
                .x402
                .topup_amounts_micros
                .iter()
                .map(|m| crate::money::format_dollars_short(*m))
                .collect(),
        }
    }

    fn model_ids(&self, kind: Kind) -> Vec<&str> {
        self.models
            .iter()
            .filter(|(_, k, _)| *k == kind)
            .map(|(id, _, _)| id.as_str())
            .collect()
    }
}

/// A string the handlers trim and then hold to 1..=`max` characters (`Fields::string`).
fn text(max: usize) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": "\\S" })
}

/// A string that `null` or blank clears (`Fields::nullable_string`).
fn nullable_text(max: usize) -> Value {
    json!({ "type": ["string", "null"], "maxLength": max })
}

/// An http(s) URL with a host (`apps::valid_url`). The pattern is the plain form every client
/// writes; the server also takes any other URI `http::Uri` parses with those parts.
const URL_PATTERN: &str = "^https?://[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,30}){0,4}$";

fn url(nullable: bool) -> Value {
    let kind = if nullable {
        json!(["string", "null"])
    } else {
        json!("string")
    };
    json!({ "type": kind, "maxLength": crate::api::apps::MAX_URL, "pattern": URL_PATTERN, "format": "uri" })
}

/// `allowed_origins`: `*`, origins, or `scheme://*.domain` patterns (`apps::parse_origin_pattern`).
fn origins() -> Value {
    json!({
        "type": ["array", "null"],
        "maxItems": crate::api::apps::MAX_ORIGINS,
        "items": { "type": "string", "pattern": "^(\\*|https?://(\\*\\.)?[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?){0,3}(:[1-9][0-9]{0,3})?)$" }
    })
}

/// Permission names (SPEC §4): a resource, or a resource with `:read` or `:write`.
fn permissions() -> Value {
    let names: Vec<String> = crate::auth::permissions::RESOURCES
        .iter()
        .flat_map(|r| [r.to_string(), format!("{r}:read"), format!("{r}:write")])
        .collect();
    json!({ "type": ["array", "null"], "items": { "type": "string", "enum": names } })
}

fn rate_limit() -> Value {
    json!({ "type": ["integer", "null"], "minimum": 1, "maximum": MAX_RATE_LIMIT, "description": "Requests per minute" })
}

/// A count `1..=max`, or null (`gateway::request::optional_count`).
fn count(max: u64) -> Value {
    json!({ "type": ["integer", "null"], "minimum": 1, "maximum": max })
}

/// Dollars from 0 to `max_micros` (a whole number of dollars): a JSON integer, or a decimal
/// string with at most six places (`money::parse_dollars`). Numbers with decimals are read too,
/// exactly, when they have at most six places.
fn dollars(max_micros: i64, positive: bool) -> Value {
    let max = max_micros / crate::money::MICROS_PER_DOLLAR;
    let digits = max.to_string().len().saturating_sub(1);
    let below = if digits == 0 {
        "0".to_string()
    } else {
        format!("[0-9]{{1,{digits}}}")
    };
    let pattern = if positive {
        format!(
            "^([1-9][0-9]{{0,{}}}(\\.[0-9]{{1,6}})?|0\\.[0-9]{{0,5}}[1-9])$",
            digits.saturating_sub(1)
        )
    } else {
        format!("^({below}(\\.[0-9]{{1,6}})?|{max}(\\.0{{1,6}})?)$")
    };
    json!({ "anyOf": [
        { "type": "integer", "minimum": i64::from(positive), "maximum": max },
        { "type": "string", "pattern": pattern }
    ] })
}

/// A schema for an object: `props` as given, `required` among them.
fn object(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

fn body_schema(name: &str, facts: &Facts) -> Value {
    use crate::gateway::request::{
        MAX_CHOICES, MAX_EMBEDDING_INPUTS, MAX_IMAGES, MAX_MESSAGES, MAX_PROMPT_CHARS, SIZES,
    };
    let future = json!({ "type": ["string", "null"], "format": "date-time", "description": "RFC 3339, in the future" });
    match name {
        "signin" => object(
            &["message", "signature"],
            json!({
                "message": { "type": "string", "maxLength": crate::auth::siwe::MAX_MESSAGE_BYTES },
                "signature": { "type": "string" }
            }),
        ),
        "key_session" => object(&["apiKey"], json!({ "apiKey": text(MAX_TOKEN) })),
        "key" => object(
            &["name"],
            json!({
                "name": text(MAX_NAME),
                "description": nullable_text(MAX_KEY_DESCRIPTION),
                "type": { "type": "string", "enum": ["live", "test"] },
                "permissions": permissions(),
                "rateLimit": rate_limit(),
                "expires_at": future,
            }),
        ),
        "key_patch" => object(
            &[],
            json!({
                "name": text(MAX_NAME),
                "description": nullable_text(MAX_KEY_DESCRIPTION),
                "permissions": permissions(),
                "rateLimit": rate_limit(),
                "is_active": { "type": "boolean" },
                "expires_at": future,
            }),
        ),
        "name" => object(&["name"], json!({ "name": text(MAX_NAME) })),
        "app" | "app_patch" => {
            let mut props = json!({
                "name": text(MAX_NAME),
                "app_url": url(false),
                "description": nullable_text(MAX_APP_DESCRIPTION),
                "website_url": url(true),
                "logo_url": url(true),
                "allowed_origins": origins(),
                "permissions": permissions(),
                "rateLimit": rate_limit(),
            });
            if let Some(map) = props.as_object_mut() {
                if name == "app" {
                    if let Value::Object(hook) = webhook_props("webhookUrl") {
                        map.extend(hook);
                    }
                } else {
                    map.insert("is_active".into(), json!({ "type": "boolean" }));
                }
            }
            let required: &[&str] = if name == "app" {
                &["name", "app_url"]
            } else {
                &[]
            };
            object(required, props)
        }
        "monetization" => object(
            &[],
            json!({
                "enabled": { "type": "boolean" },
                "pricing": {
                    "type": ["object", "null"],
                    "additionalProperties": false,
                    "properties": {
                        "perRequest": dollars(crate::api::earnings::MAX_PER_REQUEST, false),
                        "perToken": dollars(crate::api::earnings::MAX_PER_TOKEN, false),
                    }
                }
            }),
        ),
        "withdraw" => object(
            &["amount"],
            json!({
                "amount": dollars(crate::money::MICROS_PER_DOLLAR * 1_000_000, true),
                "idempotency_key": text(MAX_TOKEN),
            }),
        ),
        "webhook" => object(&["url"], webhook_props("url")),
        "domain" => {
            let apps = facts.apps_domain.replace('.', "\\.");
            object(
                &["domain"],
                json!({ "domain": {
                    "type": "string", "minLength": 4, "maxLength": 253,
                    "pattern": "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
                    "not": { "anyOf": [
                        { "pattern": format!("(^|\\.){apps}$") },
                        { "pattern": "(^|\\.)xn--" }
                    ] },
                    "description": "A DNS name of at least two labels, not an IP, not under the apps domain"
                } }),
            )
        }
        "chat" => object(
            &["model", "messages"],
            json!({
                "model": { "type": "string", "enum": facts.model_ids(Kind::Chat) },
                "messages": {
                    "type": "array", "minItems": 1, "maxItems": MAX_MESSAGES,
                    "items": {
                        "type": "object", "required": ["role"],
                        "properties": {
                            "role": { "type": "string", "minLength": 1 },
                            "content": { "type": ["string", "array", "null"] }
                        }
                    }
                },
                "stream": { "type": ["boolean", "null"] },
                "stream_options": {
                    "type": ["object", "null"],
                    "properties": { "include_usage": { "type": ["boolean", "null"] } }
                },
                "max_tokens": count(u64::from(u32::MAX)),
                "max_completion_tokens": count(u64::from(u32::MAX)),
                "n": count(u64::from(MAX_CHOICES)),
            }),
        ),
        "embeddings" => {
            let mut schema = object(
                &["model", "input"],
                json!({
                    "model": { "type": "string", "enum": facts.model_ids(Kind::Embedding) },
                    "input": { "anyOf": [
                        { "type": "string", "minLength": 1 },
                        { "type": "array", "minItems": 1, "maxItems": MAX_EMBEDDING_INPUTS,
                          "items": { "type": "string", "minLength": 1 } }
                    ] },
                    "encoding_format": { "type": ["string", "null"], "enum": ["float", "base64", null] },
                    "dimensions": count(u64::from(crate::gateway::models::MAX_DIMENSIONS)),
                }),
            );
            // `dimensions` up to the model's own.
            let per_model: Vec<Value> = facts
                .models
                .iter()
                .filter(|(_, kind, _)| *kind == Kind::Embedding)
                .map(|(id, _, dims)| {
                    // At most MAX_EMBEDDING_FLOATS numbers in one answer (inputs × dimensions).
                    let inputs = (crate::api::gateway::MAX_EMBEDDING_FLOATS
                        / (*dims).max(1) as usize)
                        .min(MAX_EMBEDDING_INPUTS);
                    json!({ "properties": {
                        "model": { "const": id },
                        "dimensions": count(u64::from(*dims)),
                        "input": { "anyOf": [
                            { "type": "string" },
                            { "type": "array", "maxItems": inputs }
                        ] }
                    } })
                })
                .collect();
            if let (false, Some(map)) = (per_model.is_empty(), schema.as_object_mut()) {
                map.insert("anyOf".into(), Value::Array(per_model));
            }
            schema
        }
        "images" => object(
            &["prompt"],
            json!({
                "model": { "type": ["string", "null"], "enum": facts.model_ids(Kind::Image).into_iter().map(Value::from).chain([Value::Null]).collect::<Vec<_>>() },
                "prompt": { "type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS },
                "n": count(u64::from(MAX_IMAGES)),
                "size": { "type": ["string", "null"], "enum": SIZES.iter().map(|(s, _)| Value::from(*s)).chain([Value::Null]).collect::<Vec<_>>() },
                "response_format": { "type": ["string", "null"], "enum": ["b64_json", null] },
            }),
        ),
        _ => json!({ "type": "object" }),
    }
}

/// A webhook's settings (`api::webhooks::settings_of`), its URL under `url_field`.
fn webhook_props(url_field: &str) -> Value {
    use crate::store::webhooks::EVENTS;
    let mut props = json!({
        "events": { "type": ["array", "null"], "items": { "type": "string", "enum": EVENTS } },
        "usageThresholds": {
            "type": ["array", "null"], "maxItems": crate::api::webhooks::MAX_THRESHOLDS,
            "items": { "type": "integer", "minimum": 1, "maximum": 1_000_000_000_000u64 }
        },
    });
    if let Some(map) = props.as_object_mut() {
        map.insert(
            url_field.into(),
            json!({ "type": "string", "maxLength": crate::webhooks::target::MAX_URL, "pattern": URL_PATTERN, "format": "uri",
                    "description": "Its host must resolve to an address webhooks may reach" }),
        );
    }
    props
}

/// Path and query parameters.
fn parameters(o: &Operation, facts: &Facts) -> Vec<Value> {
    let mut out = Vec::new();
    for part in o.path.split('/') {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let schema = match name {
                "id" | "key" => json!({ "type": "string", "format": "uuid" }),
                "delivery" => json!({ "type": "string", "pattern": "^msg_[0-9a-f]{32}$" }),
                "amount" => {
                    json!({ "type": "string", "enum": facts.topup_amounts, "description": "One of the amounts this server offers" })
                }
                "model" => {
                    json!({ "type": "string", "enum": facts.models.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>() })
                }
                _ => json!({ "type": "string" }),
            };
            out.push(json!({ "name": name, "in": "path", "required": true, "schema": schema }));
        }
    }
    let query = |name: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "schema": schema });
    let paging = |max: u64| {
        [
            query(
                "page",
                json!({ "type": "integer", "minimum": 1, "maximum": crate::web::query::MAX_PAGE }),
            ),
            query(
                "limit",
                json!({ "type": "integer", "minimum": 1, "maximum": max }),
            ),
        ]
    };
    let period = query(
        "period",
        json!({ "type": "string", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$", "description": "A month, YYYY-MM" }),
    );
    match o.id {
        "api_keys_list" | "apps_list" | "apps_users" | "apps_webhook_deliveries" => {
            out.extend(paging(100))
        }
        "credits" => out.extend(paging(100)),
        "usage" | "apps_analytics" => out.push(period),
        "siws_nonce" => out.push(query(
            "chainId",
            json!({ "type": "string", "enum": crate::auth::siws::CHAIN_IDS }),
        )),
        "siwe_nonce" => {
            out.push(query(
                "chainId",
                json!({ "type": "string", "pattern": "^[1-9][0-9]{0,18}$" }),
            ));
            out.push(query(
                "address",
                json!({ "type": "string", "pattern": "^0x[0-9a-fA-F]{40}$" }),
            ));
        }
        "domains_allowed" => out.push(query("domain", json!({ "type": "string" }))),
        _ => {}
    }
    out
}

fn security(o: &Operation) -> Value {
    let access = o.access;
    let credential = json!([
        { "apiKey": [] }, { "bearer": [] }, { "session": [] },
        { "walletAddress": [], "walletSignature": [], "walletTimestamp": [] }
    ]);
    match access {
        Public => json!([]),
        // A browser without a session is sent to sign in (303), not refused.
        Credential if o.answer == Html => {
            let mut all = credential.as_array().cloned().unwrap_or_default();
            all.push(json!({}));
            Value::Array(all)
        }
        Credential => credential,
        CredentialOrPayment | Payment => {
            let mut all = credential.as_array().cloned().unwrap_or_default();
            all.push(json!({ "x402": [] }));
            if access == Payment {
                all.push(json!({}));
            }
            Value::Array(all)
        }
    }
}

/// The success body of the operations whose answers clients read field by field (the OpenAI
/// shapes, keys, apps, credits); the rest are documented as objects. Each names the fields the
/// handler always writes.
fn success_schema(id: &str) -> Value {
    let key_ref = json!({ "$ref": "#/components/schemas/ApiKey" });
    let usage = json!({
        "type": "object", "required": ["prompt_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": { "type": "integer", "minimum": 0 },
            "completion_tokens": { "type": "integer", "minimum": 0 },
            "total_tokens": { "type": "integer", "minimum": 0 }
        }
    });
    let listing = |name: &str, items: Value| {
        json!({
            "type": "object", "required": [name, "page", "limit", "total"],
            "properties": {
                name: { "type": "array", "items": items },
                "page": { "type": "integer", "minimum": 1 },
                "limit": { "type": "integer", "minimum": 1 },
                "total": { "type": "integer", "minimum": 0 }
            }
        })
    };
    let model = json!({
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": { "type": "string" }, "object": { "const": "model" },
            "created": { "type": "integer" }, "owned_by": { "type": "string" }
        }
    });
    let app = json!({
        "type": "object", "required": ["id", "name", "slug", "app_url", "subdomain", "is_active", "created_at"],
        "properties": {
            "id": { "type": "string", "format": "uuid" }, "name": { "type": "string" },
            "slug": { "type": "string" }, "app_url": { "type": "string" },
            "subdomain": { "type": "string" }, "is_active": { "type": "boolean" },
            "created_at": { "type": "string" }
        }
    });
    match id {
        "healthz" | "readyz" => json!({
            "type": "object", "required": ["status"], "properties": { "status": { "type": "string" } }
        }),
        "models_list" => json!({
            "type": "object", "required": ["object", "data"],
            "properties": { "object": { "const": "list" }, "data": { "type": "array", "items": model } }
        }),
        "models_get" => model,
        "chat_completions" => json!({
            "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": { "type": "string" }, "object": { "const": "chat.completion" },
                "created": { "type": "integer" }, "model": { "type": "string" },
                "choices": { "type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": { "type": "integer", "minimum": 0 },
                        "message": { "type": "object", "required": ["role"],
                            "properties": { "role": { "const": "assistant" }, "content": { "type": ["string", "null"] } } },
                        "finish_reason": { "type": ["string", "null"] }
                    }
                } },
                "usage": usage
            }
        }),
        "embeddings" => json!({
            "type": "object", "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": { "const": "list" }, "model": { "type": "string" }, "usage": usage,
                "data": { "type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": { "const": "embedding" }, "index": { "type": "integer", "minimum": 0 },
                        "embedding": { "type": ["array", "string"], "items": { "type": "number" },
                            "description": "Floats, or base64 of little-endian f32 with `encoding_format: base64`" }
                    }
                } }
            }
        }),
        "images_generations" => json!({
            "type": "object", "required": ["created", "data"],
            "properties": {
                "created": { "type": "integer" },
                "data": { "type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["b64_json"], "properties": { "b64_json": { "type": "string" } }
                } }
            }
        }),
        "api_keys_create" | "api_keys_regenerate" => json!({
            "type": "object", "required": ["apiKey", "plainKey"],
            "properties": {
                "apiKey": key_ref,
                "plainKey": { "type": "string", "pattern": "^ek_(live|test)_[A-Za-z0-9]+$", "description": "Shown once" }
            }
        }),
        "api_keys_update" => json!({
            "type": "object", "required": ["apiKey"], "properties": { "apiKey": key_ref }
        }),
        "api_keys_list" => listing("keys", key_ref),
        "apps_list" => listing("apps", app),
        "apps_create" => json!({
            "type": "object", "required": ["success", "app", "apiKey"],
            "properties": {
                "success": { "const": true }, "app": app,
                "apiKey": { "type": "string", "pattern": "^ek_(live|test)_[A-Za-z0-9]+$", "description": "The app key, shown once" }
            }
        }),
        "apps_get" | "apps_update" => json!({
            "type": "object", "required": ["app"], "properties": { "app": app }
        }),
        "credits" => json!({
            "type": "object",
            "required": ["balance", "balance_micros", "transactions", "page", "limit", "total"],
            "properties": {
                "balance": { "type": "string", "pattern": "^-?[0-9]+\\.[0-9]{6}$" },
                "balance_micros": { "type": "integer" },
                "transactions": { "type": "array", "items": {
                    "type": "object", "required": ["id", "amount", "amount_micros", "type", "created_at"],
                    "properties": {
                        "id": { "type": "string" }, "amount": { "type": "string" },
                        "amount_micros": { "type": "integer" }, "type": { "type": "string" },
                        "created_at": { "type": "string" }
                    }
                } },
                "page": { "type": "integer" }, "limit": { "type": "integer" }, "total": { "type": "integer" }
            }
        }),
        _ => json!({ "type": "object" }),
    }
}

fn responses(o: &Operation) -> Value {
    let mut out = Map::new();
    let envelope = json!({ "description": "An error, in the envelope", "content": { "application/json": { "schema": error_ref() } } });
    match o.answer {
        Json(status) => {
            out.insert(
                status.to_string(),
                json!({ "description": "Success", "content": { "application/json": { "schema": success_schema(o.id) } } }),
            );
        }
        CreatedOrFound => {
            for (status, what) in [("201", "Created"), ("200", "There already")] {
                out.insert(
                    status.into(),
                    json!({ "description": what, "content": { "application/json": { "schema": { "type": "object" } } } }),
                );
            }
        }
        JsonOrStream => {
            out.insert(
                "200".into(),
                json!({ "description": "The completion, or its event stream with `stream: true`", "content": {
                    "application/json": { "schema": success_schema(o.id) },
                    "text/event-stream": { "schema": {
                        "type": "object",
                        "description": "Each event: `data:` a chat.completion.chunk as JSON, the last `[DONE]`",
                        "required": ["data"],
                        "properties": { "data": { "type": "string" }, "event": { "type": "string" }, "id": { "type": "string" } }
                    } }
                } }),
            );
        }
        Html => {
            out.insert(
                "200".into(),
                json!({ "description": "The page", "content": { "text/html": { "schema": { "type": "string" } } } }),
            );
            if o.access == Credential {
                out.insert(
                    "303".into(),
                    json!({ "description": "Without a session: to the sign-in page", "headers": { "Location": { "schema": { "type": "string" } } } }),
                );
            }
        }
        Redirect => {
            out.insert(
                "303".into(),
                json!({ "description": "Where to go next", "headers": { "Location": { "schema": { "type": "string" } } } }),
            );
        }
        Text(kind) => {
            out.insert(
                "200".into(),
                json!({ "description": "Success", "content": { kind: { "schema": { "type": "string" } } } }),
            );
        }
    }
    if matches!(o.access, Payment | CredentialOrPayment) {
        out.insert(
            "402".into(),
            json!({ "description": "Payment required: the x402 requirements", "content": { "application/json": { "schema": { "type": "object" } } } }),
        );
    }
    // Every status the contract allows, in the envelope (§2); the dashboard's in HTML.
    let html_error = json!({ "description": "An error, as a page", "content": { "text/html": { "schema": { "type": "string" } } } });
    let dashboard = o.path == "/" || o.path.starts_with("/dashboard");
    out.insert(
        "default".into(),
        if dashboard { html_error } else { envelope },
    );
    Value::Object(out)
}

/// The document, for this server's public URL.
pub fn document(facts: &Facts) -> Value {
    let mut paths = Map::new();
    for (i, o) in OPERATIONS.iter().enumerate() {
        // Operation ids are unique: a route served at two paths gets its path's last segment.
        let repeated = OPERATIONS.iter().take(i).any(|p| p.id == o.id);
        let id = if repeated {
            format!(
                "{}_{}",
                o.id,
                o.path
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .trim_matches(['{', '}'])
            )
        } else {
            o.id.to_string()
        };
        let mut operation = json!({
            "operationId": id,
            "summary": o.summary,
            "tags": [o.tag],
            "security": security(o),
            "responses": responses(o),
        });
        let params = parameters(o, facts);
        if let (false, Some(map)) = (params.is_empty(), operation.as_object_mut()) {
            map.insert("parameters".into(), Value::Array(params));
        }
        let request = match o.body {
            NoBody => None,
            Body_(name) => Some(
                json!({ "required": true, "content": { "application/json": { "schema": body_schema(name, facts) } } }),
            ),
            Form(name) => {
                let schema = if name == "sign_in" {
                    object(&["api_key"], json!({ "api_key": text(MAX_TOKEN) }))
                } else {
                    json!({ "type": "object", "description": "The fields of the page's form" })
                };
                Some(
                    json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": schema } } }),
                )
            }
        };
        if let (Some(request), Some(map)) = (request, operation.as_object_mut()) {
            map.insert("requestBody".into(), request);
        }
        let item = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(o.method.to_string(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "eliza-cloud",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The self-hosted elizaOS Cloud identity, billing, gateway and app layer (SPEC). Errors use one envelope; see the Error schema."
        },
        "servers": [{ "url": facts.public_url }],
        "paths": paths,
        "components": {
            "schemas": {
                "ApiKey": {
                    "type": "object",
                    "required": ["id", "name", "key_prefix", "type", "permissions", "rateLimit", "is_active", "usage_count", "created_at", "expires_at", "app_id"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "name": { "type": "string" },
                        "description": { "type": ["string", "null"] },
                        "key_prefix": { "type": "string" },
                        "type": { "enum": ["live", "test"] },
                        "permissions": { "type": "array", "items": { "type": "string" } },
                        "rateLimit": { "type": ["integer", "null"] },
                        "is_active": { "type": "boolean" },
                        "usage_count": { "type": "integer", "minimum": 0 },
                        "last_used_at": { "type": ["string", "null"] },
                        "created_at": { "type": "string" },
                        "expires_at": { "type": ["string", "null"] },
                        "app_id": { "type": ["string", "null"] }
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "type", "param", "message", "requestId"],
                        "properties": {
                            "code": { "type": "string" },
                            "type": { "type": "string", "enum": ["invalid_request_error", "authentication_error", "insufficient_quota", "permission_error", "rate_limit_error", "api_error"] },
                            "param": { "type": ["string", "null"] },
                            "message": { "type": "string" },
                            "requestId": { "type": "string" },
                            "details": {}
                        }
                    } }
                }
            },
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" },
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API key as a bearer token" },
                "session": { "type": "apiKey", "in": "cookie", "name": "eliza_session" },
                "walletAddress": { "type": "apiKey", "in": "header", "name": "X-Wallet-Address" },
                "walletSignature": { "type": "apiKey", "in": "header", "name": "X-Wallet-Signature" },
                "walletTimestamp": { "type": "apiKey", "in": "header", "name": "X-Timestamp" },
                "x402": { "type": "apiKey", "in": "header", "name": "X-PAYMENT", "description": "An x402 payment (v1; PAYMENT-SIGNATURE for v2)" }
            }
        }
    })
}

/// `GET /api/openapi.json`.
pub fn serve(state: &AppState) -> Response<Body> {
    let bytes = serde_json::to_vec(&document(&Facts::of(state))).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::route::parse_route;

    fn example(path: &str) -> String {
        path.replace("{id}", "7f0c3e5e-6f36-4c39-9b7e-2f1a7c3d9e10")
            .replace("{key}", "0b8f7f6e-1d2c-4b3a-8e9f-0a1b2c3d4e5f")
            .replace("{delivery}", "msg_00")
            .replace("{amount}", "10")
            .replace("{model}", "gpt-4o-mini")
            .replace("{token}", "abc")
            .replace("{page}", "keys")
    }

    /// Every name `Route::name` can answer, read from its source: a new route without an
    /// operation fails here.
    fn route_names() -> Vec<String> {
        let source = include_str!("../web/route.rs");
        let start = source.find("pub const fn name(self)").unwrap_or(0);
        let end = source[start..]
            .find("pub const fn needs")
            .map_or(source.len(), |e| start + e);
        source[start..end]
            .split("=> \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_operation_routes_to_the_route_of_its_name() {
        for o in OPERATIONS {
            let method = http::Method::from_bytes(o.method.to_uppercase().as_bytes()).unwrap();
            let route = parse_route(&method, &example(o.path));
            assert_eq!(route.name(), o.id, "{} {}", o.method, o.path);
        }
    }

    #[test]
    fn every_route_has_an_operation_and_no_operation_is_twice() {
        let names = route_names();
        assert!(names.len() > 50, "{names:?}");
        for name in &names {
            let documented = OPERATIONS.iter().any(|o| o.id == name);
            assert!(
                documented || NOT_OPERATIONS.contains(&name.as_str()),
                "route {name} has no operation in the OpenAPI document"
            );
        }
        for o in OPERATIONS {
            assert!(
                names.iter().any(|n| n == o.id),
                "operation {} has no route",
                o.id
            );
            let same = OPERATIONS
                .iter()
                .filter(|p| p.path == o.path && p.method == o.method)
                .count();
            assert_eq!(same, 1, "{} {}", o.method, o.path);
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_envelope_and_the_security_schemes() {
        let doc = document(&Facts {
            public_url: "http://localhost:3000".into(),
            apps_domain: "apps.localhost".into(),
            models: vec![("gpt-4o-mini".into(), Kind::Chat, 0)],
            topup_amounts: vec!["10".into()],
        });
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let count: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(count, OPERATIONS.len());
        for scheme in ["apiKey", "bearer", "session", "walletSignature", "x402"] {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "{scheme}"
            );
        }
        let chat = &doc["paths"]["/api/v1/chat/completions"]["post"];
        assert!(chat["responses"]["402"].is_object());
        assert_eq!(
            chat["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error"
        );
        let key = &doc["paths"]["/api/v1/api-keys/{key}"]["patch"];
        assert_eq!(key["parameters"][0]["name"], "key");
        // Operation ids are unique (the dashboard's overview and pages share a route).
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|o| o["operationId"].as_str().unwrap())
            .collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all);
        // The success bodies clients read field by field are described.
        let create = &doc["paths"]["/api/v1/api-keys"]["post"]["responses"]["201"];
        assert_eq!(
            create["content"]["application/json"]["schema"]["required"],
            json!(["apiKey", "plainKey"])
        );
        assert!(doc["components"]["schemas"]["ApiKey"]["required"].is_array());
    }
}
