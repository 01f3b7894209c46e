//! The web dashboard (SPEC §13), served by the binary at `/dashboard`: HTML rendered by maud
//! (escaped by construction), no script needed to read or to post forms, no external asset.
//!
//! Every page and form goes through the pipeline like any API call (the session cookie or a
//! key, the CSRF rule for forms, the rate limit), then reaches the data only through
//! [`crate::web::call_api`]: the API route's own scope and permission declarations and its own
//! handler. A page can do nothing the API cannot. Forms post
//! `application/x-www-form-urlencoded`; their fields are turned into the JSON body of the API
//! call, and an API error is shown next to the field it names (`param`).

// `serde_json::Value` indexed by a key answers `Null` for a missing one and never panics; the
// lint cannot tell it from slice indexing. Writes go through `set`, which never panics either.
#![allow(clippy::indexing_slicing)]

pub mod chart;

use http::{HeaderValue, Method, Response, StatusCode, header};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::{Value, json};

use crate::api::input::{MAX_APP_DESCRIPTION, MAX_NAME, MAX_RATE_LIMIT};
use crate::auth::Principal;
use crate::state::AppState;
use crate::web::body::{Body, full};
use crate::web::call_api;
use crate::web::error::ApiError;
use chart::{Point, bar_chart};

/// Where a browser without a session is sent.
pub const SIGN_IN: &str = "/dashboard/sign-in";

const STYLE: &str = r#"
:root{--fg:#111;--bg:#fff;--muted:#555;--line:#ccc;--accent:#0b57d0;--bad:#a50e0e;--ok:#0d652d}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--accent)}
header{border-bottom:1px solid var(--line);padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header nav{display:flex;flex-wrap:wrap;gap:.25rem 1rem}
header nav a[aria-current=page]{font-weight:700;text-decoration:none;color:var(--fg)}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.95rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
.scroll{overflow-x:auto}
form{margin:.5rem 0}
form.inline{display:inline}
label{display:block;font-weight:600;margin-top:.5rem}
input,select,textarea,button{font:inherit}
input[type=text],input[type=url],input[type=number],input[type=password],input[type=date],select,textarea{width:100%;max-width:28rem;padding:.4rem;border:1px solid #767676;border-radius:4px}
button{padding:.4rem .9rem;border:1px solid var(--accent);background:var(--accent);color:#fff;border-radius:4px;cursor:pointer;margin-top:.5rem}
button.secondary{background:#fff;color:var(--accent)}
button.danger{background:var(--bad);border-color:var(--bad)}
:focus-visible{outline:3px solid #f9ab00;outline-offset:2px}
.error{color:var(--bad);font-weight:600}
.notice{border:2px solid var(--ok);padding:.75rem;border-radius:4px;margin:1rem 0}
.secret{font-family:ui-monospace,monospace;width:100%;max-width:40rem}
.muted{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.75rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.75rem}
.card strong{display:block;font-size:1.4rem}
figure.chart{margin:1rem 0}
figure.chart svg{width:100%;height:auto;max-width:640px;display:block}
svg .bar{fill:var(--accent)}svg .axis{stroke:#333}svg .grid{stroke:#e3e3e3}
svg text{font-size:11px;fill:#333}
fieldset{border:1px solid var(--line);border-radius:4px;margin:.5rem 0}
.checks label{display:inline-block;font-weight:400;margin-right:1rem}
"#;

/// Copies the text of the element a button names; without script the field is still there to
/// select by hand.
const COPY_SCRIPT: &str = r#"document.querySelectorAll('button[data-copy]').forEach(function(b){b.hidden=false;b.addEventListener('click',function(){var f=document.getElementById(b.dataset.copy);navigator.clipboard.writeText(f.value).then(function(){b.textContent='Copied';});});});"#;

/// Signs in with a browser wallet by SIWE (the JSON routes), when one is present: at load, or
/// when the wallet announces itself later (`ethereum#initialized`, as MetaMask does).
const WALLET_SCRIPT: &str = r#"(function () {
  var button = document.getElementById('wallet');
  var status = document.getElementById('wallet-status');
  if (!button) return;
  function hex(text) {
    return '0x' + Array.from(new TextEncoder().encode(text))
      .map(function (b) { return b.toString(16).padStart(2, '0'); }).join('');
  }
  async function signIn() {
    var wallet = window.ethereum;
    try {
      var address = (await wallet.request({ method: 'eth_requestAccounts' }))[0];
      var chain = parseInt(await wallet.request({ method: 'eth_chainId' }), 16) || 1;
      var nonce = await (await fetch('/api/auth/siwe/nonce?chainId=' + chain + '&address=' + address)).json();
      var signature = await wallet.request({ method: 'personal_sign', params: [hex(nonce.message), address] });
      var answer = await fetch('/api/auth/siwe/verify', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ message: nonce.message, signature: signature })
      });
      if (answer.ok) { location.href = '/dashboard'; }
      else { status.textContent = 'The wallet sign-in was refused.'; }
    } catch (e) {
      status.textContent = 'The wallet sign-in did not complete.';
    }
  }
  function offer() {
    if (!window.ethereum || !button.hidden) return;
    button.hidden = false;
    button.addEventListener('click', signIn);
  }
  offer();
  window.addEventListener('ethereum#initialized', offer, { once: true });
})();"#;

/// A form's failure, shown next to its field.
#[derive(Debug, Clone, Default)]
pub struct FormError {
    /// Which form (its action path).
    pub form: String,
    /// The field the API named, if any.
    pub field: Option<String>,
    pub message: String,
}

/// What a successful form left to show once (a new key) or to say.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    pub message: String,
    /// A secret shown once, with its label.
    pub secret: Option<(String, String)>,
}

/// The pages' policy: nothing but our own style and our two scripts (by their hashes), requests
/// to ourselves, forms to ourselves, never in a frame.
fn content_security_policy() -> Option<&'static HeaderValue> {
    static CSP: std::sync::OnceLock<Option<HeaderValue>> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = |text: &str| {
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text))
            )
        };
        HeaderValue::from_str(&format!(
            "default-src 'none'; style-src {}; script-src {} {}; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(STYLE),
            hash(COPY_SCRIPT),
            hash(WALLET_SCRIPT)
        ))
        .ok()
    })
    .as_ref()
}

fn html_response(status: StatusCode, page: Markup) -> Response<Body> {
    let mut response = Response::new(full(page.into_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(csp) = content_security_policy() {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// A redirect (303: the browser follows with a GET).
pub fn redirect(to: &'static str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
}

fn layout(title: &str, current: &str, signed_in: Option<&Principal>, body: Markup) -> Markup {
    let nav = [
        ("/dashboard", "Overview"),
        ("/dashboard/keys", "API keys"),
        ("/dashboard/apps", "Apps"),
        ("/dashboard/credits", "Credits"),
        ("/dashboard/usage", "Usage"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · eliza-cloud" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "eliza-cloud" }
                    @if let Some(p) = signed_in {
                        nav aria-label="Dashboard" {
                            @for (href, name) in nav {
                                @if href == current {
                                    a href=(href) aria-current="page" { (name) }
                                } @else {
                                    a href=(href) { (name) }
                                }
                            }
                        }
                        span.muted { (p.organization().name) }
                        form.inline method="post" action="/dashboard/sign-out" {
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
                script { (PreEscaped(COPY_SCRIPT)) }
            }
        }
    }
}

/// A field's error, if the failed form is this one and names this field (or names none and
/// this is the form's first field).
fn field_error(error: Option<&FormError>, form: &str, field: &str, first: bool) -> Markup {
    let shown = error.filter(|e| {
        e.form == form && (e.field.as_deref() == Some(field) || (first && e.field.is_none()))
    });
    html! {
        @if let Some(e) = shown {
            p.error id=(format!("{form}-{field}-error")) role="alert" { (e.message) }
        }
    }
}

fn notice_box(notice: Option<&Notice>) -> Markup {
    html! {
        @if let Some(n) = notice {
            section.notice role="status" {
                p { (n.message) }
                @if let Some((label, secret)) = &n.secret {
                    label for="secret" { (label) }
                    input.secret id="secret" type="text" readonly value=(secret);
                    button type="button" data-copy="secret" hidden { "Copy" }
                    p { strong { "It will not be shown again." } " Store it now." }
                }
            }
        }
    }
}

/// Sets a field of a JSON object (nothing for any other value).
fn set(object: &mut Value, key: &str, value: Value) {
    if let Some(o) = object.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A form body's fields (`+` is a space, as browsers send it).
pub fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::Validation {
        message: "The form is not UTF-8".into(),
        details: json!({}),
    })?;
    crate::web::query::parse_query(&text.replace('+', "%20")).map_err(|_| ApiError::Validation {
        message: "The form is not URL-encoded".into(),
        details: json!({}),
    })
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn all_of<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn form_error_of(form: &str, e: &ApiError) -> FormError {
    let (_, _, message, details) = e.parts();
    let field = details
        .as_ref()
        .and_then(|d| d.as_object())
        .and_then(|o| o.keys().next().cloned());
    FormError {
        form: form.to_string(),
        field,
        message,
    }
}

/// `GET /dashboard/sign-in` and the sign-in form's answers.
pub fn sign_in_page(error: Option<&str>, status: StatusCode) -> Response<Body> {
    let body = html! {
        h1 { "Sign in" }
        p { "Sign in with an unrestricted live API key of your organization (the operator's key is printed at the server's first start). The key is exchanged for a session cookie and is not kept in the browser." }
        form method="post" action="/dashboard/sign-in" {
            label for="api_key" { "API key" }
            input #api_key type="password" name="api_key" autocomplete="off" required
                aria-describedby=[error.map(|_| "sign-in-error")];
            @if let Some(e) = error {
                p.error #sign-in-error role="alert" { (e) }
            }
            button type="submit" { "Sign in" }
        }
        h2 { "With a wallet" }
        p.muted { "A browser wallet (Sign-In With Ethereum) needs JavaScript." }
        button #wallet type="button" hidden { "Sign in with a wallet" }
        p #wallet-status role="status" {}
        script { (PreEscaped(WALLET_SCRIPT)) }
    };
    html_response(status, layout("Sign in", "", None, body))
}

/// `POST /dashboard/sign-in`: the key exchanged for a session (the same function as
/// `POST /api/auth/key-session`), then to the overview.
pub async fn sign_in(state: &AppState, body: &[u8]) -> Response<Body> {
    let fields = match form_fields(body) {
        Ok(f) => f,
        Err(e) => return sign_in_page(Some(&e.parts().2), StatusCode::BAD_REQUEST),
    };
    let Some(key) = field(&fields, "api_key") else {
        return sign_in_page(Some("Enter an API key."), StatusCode::BAD_REQUEST);
    };
    match crate::api::signin::exchange_key(state, key).await {
        Ok((cookie, _)) => {
            let mut response = redirect("/dashboard");
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(ApiError::Unauthorized) => sign_in_page(
            Some("That key is not valid (unknown, disabled or expired)."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => {
            let (status, _, message, _) = e.parts();
            sign_in_page(Some(&message), status)
        }
    }
}

/// An error page for a request the pipeline refused on a dashboard path.
pub fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    let body = html! {
        h1 { "Not available" }
        p.error role="alert" { (message) }
        p { a href=(SIGN_IN) { "Sign in" } " with an unrestricted live key of your organization." }
    };
    html_response(status, layout("Not available", "", None, body))
}

/// A refusal of the pipeline on a dashboard path (JSON, the envelope) as a browser wants it: 401
/// sends to the sign-in page, anything else is an HTML page with the envelope's message. HTML
/// answers of the pages themselves pass unchanged.
pub async fn refusal(response: Response<Body>) -> Response<Body> {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return response;
    }
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        return redirect(SIGN_IN);
    }
    let retry = response.headers().get(header::RETRY_AFTER).cloned();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = text(&envelope["error"]["message"]);
    let mut page = error_page(status, &message);
    if let Some(retry) = retry {
        page.headers_mut().insert(header::RETRY_AFTER, retry);
    }
    page
}

/// The segments of a dashboard path after `/dashboard`.
fn segments(path: &str) -> Vec<&str> {
    path.trim_start_matches("/dashboard")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn app_id(segment: &str) -> Option<uuid::Uuid> {
    (segment.len() == 36)
        .then(|| uuid::Uuid::try_parse(segment).ok())
        .flatten()
}

/// `GET /dashboard/...`: one page.
pub async fn page(
    state: &AppState,
    principal: &Principal,
    path: &str,
    query: Option<&str>,
) -> Response<Body> {
    render(state, principal, path, query, None, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    principal: &Principal,
    path: &str,
    query: Option<&str>,
    notice: Option<Notice>,
    error: Option<FormError>,
    status: StatusCode,
) -> Response<Body> {
    let segs = segments(path);
    let drawn = match segs.as_slice() {
        [] => overview(state, principal).await,
        ["keys"] => keys_page(state, principal, notice.as_ref(), error.as_ref()).await,
        ["apps"] => apps_page(state, principal, notice.as_ref(), error.as_ref()).await,
        ["apps", id] => match app_id(id) {
            Some(id) => app_page(state, principal, id, notice.as_ref(), error.as_ref()).await,
            None => Err(ApiError::NotFound),
        },
        ["credits"] => credits_page(state, principal, query).await,
        ["usage"] => usage_page(state, principal, query).await,
        _ => Err(ApiError::NotFound),
    };
    match drawn {
        Ok((title, current, body)) => {
            html_response(status, layout(title, current, Some(principal), body))
        }
        Err(e) => {
            let (status, _, message, _) = e.parts();
            let body = html! { h1 { "Not found" } p.error role="alert" { (message) } p { a href="/dashboard" { "Back to the overview" } } };
            html_response(status, layout("Not found", "", Some(principal), body))
        }
    }
}

type Page = Result<(&'static str, &'static str, Markup), ApiError>;

async fn get(state: &AppState, principal: &Principal, path: &str) -> Result<Value, ApiError> {
    call_api(state, principal, Method::GET, path, None)
        .await
        .map(|(_, v)| v)
}

fn daily_points(usage: &Value, key: &str, cost: bool) -> Vec<Point> {
    items(usage, key)
        .iter()
        .map(|d| {
            let label = text(&d["date"]);
            if cost {
                Point {
                    label,
                    value: number(&d["cost_micros"]) / 1e6,
                    shown: format!("${}", text(&d["cost"])),
                }
            } else {
                Point {
                    label,
                    value: number(&d["requests"]),
                    shown: text(&d["requests"]),
                }
            }
        })
        .collect()
}

async fn overview(state: &AppState, principal: &Principal) -> Page {
    let d = get(state, principal, "/api/v1/dashboard").await?;
    let usage = get(state, principal, "/api/v1/usage").await?;
    let org = &d["organization"];
    let body = html! {
        h1 { "Overview" }
        div.cards {
            div.card { "Balance" strong { "$" (text(&org["creditBalance"])) } }
            div.card { "API requests this month" strong { (text(&d["usage"]["requestsThisMonth"])) } }
            div.card { "Cost this month" strong { "$" (text(&usage["totals"]["cost"])) } }
            div.card { "API keys" strong { (text(&d["apiKeys"]["active"])) " active" } }
            div.card { "Apps" strong { (text(&d["apps"]["total"])) } }
        }
        p.muted { "Plan: " (text(&org["plan"])) " · period " (text(&usage["period"])) }
        (bar_chart("daily-requests", "Metered calls per day, this month", "calls", &daily_points(&usage, "daily", false)))
        (bar_chart("daily-cost", "Cost per day, this month", "dollars", &daily_points(&usage, "daily", true)))
    };
    Ok(("Overview", "/dashboard", body))
}

async fn keys_page(
    state: &AppState,
    principal: &Principal,
    notice: Option<&Notice>,
    error: Option<&FormError>,
) -> Page {
    let list = get(state, principal, "/api/v1/api-keys").await?;
    let form = "/dashboard/keys";
    let body = html! {
        h1 { "API keys" }
        (notice_box(notice))
        div.scroll { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Type" } th scope="col" { "Permissions" } th scope="col" { "Rate limit" } th scope="col" { "Status" } th scope="col" { "Actions" } } }
            tbody {
                @for k in items(&list, "keys") {
                    @let id = text(&k["id"]);
                    @let active = k["is_active"] == Value::Bool(true);
                    tr {
                        td { (text(&k["name"])) }
                        td { code { (text(&k["key_prefix"])) "…" } }
                        td { (text(&k["type"])) }
                        td { @if items(k, "permissions").is_empty() { "all" } @else { (items(k, "permissions").iter().map(text).collect::<Vec<_>>().join(", ")) } }
                        td { @if k["rateLimit"].is_null() { "plan's" } @else { (text(&k["rateLimit"])) "/min" } }
                        td { @if active { "active" } @else { "disabled" } }
                        td {
                            form.inline method="post" action=(format!("/dashboard/keys/{id}/toggle")) {
                                input type="hidden" name="is_active" value=(if active { "false" } else { "true" });
                                button.secondary type="submit" aria-label=(format!("{} {}", if active { "Disable" } else { "Enable" }, text(&k["name"]))) { @if active { "Disable" } @else { "Enable" } }
                            }
                            " "
                            form.inline method="post" action=(format!("/dashboard/keys/{id}/regenerate")) {
                                button.secondary type="submit" aria-label=(format!("Regenerate {}", text(&k["name"]))) { "Regenerate" }
                            }
                            " "
                            form.inline method="post" action=(format!("/dashboard/keys/{id}/revoke")) {
                                button.danger type="submit" aria-label=(format!("Revoke {}", text(&k["name"]))) { "Revoke" }
                            }
                            (field_error(error, &format!("/dashboard/keys/{id}"), "key", true))
                        }
                    }
                }
            }
        } }
        h2 { "Create a key" }
        form method="post" action=(form) {
            label for="key-name" { "Name" }
            input #key-name type="text" name="name" required maxlength=(MAX_NAME);
            (field_error(error, form, "name", true))
            label for="key-type" { "Type" }
            select #key-type name="type" { option value="live" { "live" } option value="test" { "test" } }
            (field_error(error, form, "type", false))
            fieldset.checks {
                legend { "Permissions (none checked: all)" }
                @for r in crate::auth::permissions::RESOURCES {
                    label { input type="checkbox" name="permissions" value=(r); " " (r) }
                }
            }
            (field_error(error, form, "permissions", false))
            label for="key-rate" { "Rate limit (requests per minute, empty: the plan's)" }
            input #key-rate type="number" name="rateLimit" min="1" max=(MAX_RATE_LIMIT);
            (field_error(error, form, "rateLimit", false))
            label for="key-expires" { "Expires on (empty: never)" }
            input #key-expires type="date" name="expires_on";
            (field_error(error, form, "expires_at", false))
            button type="submit" { "Create key" }
        }
    };
    Ok(("API keys", "/dashboard/keys", body))
}

async fn apps_page(
    state: &AppState,
    principal: &Principal,
    notice: Option<&Notice>,
    error: Option<&FormError>,
) -> Page {
    let list = get(state, principal, "/api/v1/apps").await?;
    let form = "/dashboard/apps";
    let body = html! {
        h1 { "Apps" }
        (notice_box(notice))
        div.scroll { table {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Subdomain" } th scope="col" { "URL" } th scope="col" { "Status" } } }
            tbody {
                @for a in items(&list, "apps") {
                    tr {
                        td { a href=(format!("/dashboard/apps/{}", text(&a["id"]))) { (text(&a["name"])) } }
                        td { (text(&a["subdomain"])) }
                        td { (text(&a["app_url"])) }
                        td { @if a["is_active"] == Value::Bool(false) { "inactive" } @else { "active" } }
                    }
                }
            }
        } }
        h2 { "Create an app" }
        form method="post" action=(form) {
            label for="app-name" { "Name" }
            input #app-name type="text" name="name" required maxlength=(MAX_NAME);
            (field_error(error, form, "name", true))
            label for="app-url" { "App URL" }
            input #app-url type="url" name="app_url" required placeholder="https://";
            (field_error(error, form, "app_url", false))
            label for="app-description" { "Description" }
            input #app-description type="text" name="description" maxlength=(MAX_APP_DESCRIPTION);
            (field_error(error, form, "description", false))
            button type="submit" { "Create app" }
        }
    };
    Ok(("Apps", "/dashboard/apps", body))
}

async fn app_page(
    state: &AppState,
    principal: &Principal,
    id: uuid::Uuid,
    notice: Option<&Notice>,
    error: Option<&FormError>,
) -> Page {
    let base = format!("/api/v1/apps/{id}");
    let app = get(state, principal, &base).await?;
    let app = &app["app"];
    let analytics = get(state, principal, &format!("{base}/analytics")).await?;
    let users = get(state, principal, &format!("{base}/users")).await?;
    let money = get(state, principal, &format!("{base}/monetization")).await?;
    let earnings = get(state, principal, &format!("{base}/earnings")).await?;
    let webhook = get(state, principal, &format!("{base}/webhook")).await?;
    let deliveries = get(state, principal, &format!("{base}/webhook/deliveries")).await?;
    let domains = get(state, principal, &format!("{base}/domains")).await?;
    let here = format!("/dashboard/apps/{id}");
    let f_money = format!("{here}/monetization");
    let f_withdraw = format!("{here}/withdraw");
    let f_hook = format!("{here}/webhook");
    let f_domain = format!("{here}/domains");
    let f_verify = format!("{here}/domains/verify");
    let pricing = &money["pricing"];
    // `null` until one is saved: every field then reads as empty.
    let hook = &webhook["webhook"];
    let body = html! {
        h1 { (text(&app["name"])) }
        (notice_box(notice))
        p.muted { "Subdomain " code { (text(&app["subdomain"])) } " · " (text(&app["app_url"])) }
        h2 { "Analytics" }
        p { "Requests this month: " strong { (text(&analytics["usage"]["totalRequests"])) } " · unique users: " strong { (text(&analytics["uniqueUsers"])) } " · cost $" (text(&analytics["costs"]["total"])) }
        (bar_chart("app-daily", "Requests per day through this app", "requests", &daily_points(&analytics, "daily", false)))
        h2 { "Users" }
        div.scroll { table {
            thead { tr { th scope="col" { "End user" } th scope="col" { "Requests" } th scope="col" { "Last seen" } } }
            tbody { @for u in items(&users, "users") { tr { td { (text(&u["id"])) } td { (text(&u["requests"])) } td { (text(&u["lastSeen"])) } } } }
        } }
        h2 { "Monetization" }
        form method="post" action=(f_money) {
            label { input type="checkbox" name="enabled" value="true" checked[money["enabled"] == Value::Bool(true)]; " Charge callers through this app" }
            label for="per-request" { "Per request (dollars)" }
            input #per-request type="text" inputmode="decimal" name="perRequest" value=(text(&pricing["perRequest"]));
            (field_error(error, &f_money, "pricing.perRequest", true))
            label for="per-token" { "Per token (dollars)" }
            input #per-token type="text" inputmode="decimal" name="perToken" value=(text(&pricing["perToken"]));
            (field_error(error, &f_money, "pricing.perToken", false))
            button type="submit" { "Save monetization" }
        }
        h2 { "Earnings" }
        p { "Total $" (text(&earnings["total"])) " · pending $" (text(&earnings["pending"])) " · available $" (text(&earnings["available"])) " · withdrawn $" (text(&earnings["withdrawn"])) }
        form method="post" action=(f_withdraw) {
            label for="withdraw-amount" { "Withdraw (dollars, into the organization's credits)" }
            input #withdraw-amount type="text" inputmode="decimal" name="amount" required;
            input type="hidden" name="idempotency_key" value=(uuid::Uuid::new_v4().to_string());
            (field_error(error, &f_withdraw, "amount", true))
            button type="submit" { "Withdraw" }
        }
        h2 { "Webhook" }
        form method="post" action=(f_hook) {
            label for="hook-url" { "URL" }
            input #hook-url type="url" name="url" value=(text(&hook["url"])) placeholder="https://";
            (field_error(error, &f_hook, "url", true))
            fieldset.checks {
                legend { "Events" }
                @for ev in crate::store::webhooks::EVENTS {
                    @let on = items(hook, "events").iter().any(|e| e.as_str() == Some(ev));
                    label { input type="checkbox" name="events" value=(ev) checked[on]; " " (ev) }
                }
            }
            (field_error(error, &f_hook, "events", false))
            button type="submit" { "Save webhook" }
        }
        @if !hook["url"].is_null() {
            form method="post" action=(format!("{f_hook}/test")) {
                button.secondary type="submit" { "Send a test event" }
            }
            (field_error(error, &format!("{f_hook}/test"), "webhook", true))
        }
        @if !items(&deliveries, "deliveries").is_empty() {
            h3 { "Deliveries" }
            div.scroll { table {
                thead { tr { th scope="col" { "Event" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "" } } }
                tbody { @for d in items(&deliveries, "deliveries") {
                    tr { td { (text(&d["event"])) } td { (text(&d["status"])) } td { (text(&d["attempts"])) }
                        td { form.inline method="post" action=(format!("{here}/redeliver")) {
                            input type="hidden" name="delivery" value=(text(&d["id"]));
                            button.secondary type="submit" aria-label=(format!("Redeliver {}", text(&d["id"]))) { "Redeliver" }
                        } } }
                } }
            } }
        }
        (field_error(error, &format!("{here}/redeliver"), "delivery", true))
        h2 { "Domains" }
        div.scroll { table {
            thead { tr { th scope="col" { "Domain" } th scope="col" { "TXT record to add" } th scope="col" { "Verified" } th scope="col" { "" } } }
            tbody { @for d in items(&domains, "domains") {
                @let name = text(&d["domain"]);
                tr {
                    td { (name) }
                    td { code { (text(&d["verificationRecord"]["name"])) } br; code { (text(&d["verificationRecord"]["value"])) } }
                    td { @if d["verified"] == Value::Bool(true) { "yes" } @else { "no" } }
                    td {
                        @if d["verified"] != Value::Bool(true) {
                            form.inline method="post" action=(f_verify) {
                                input type="hidden" name="domain" value=(name);
                                button type="submit" aria-label=(format!("Verify {name}")) { "Verify" }
                            }
                        }
                        " "
                        form.inline method="post" action=(format!("{f_domain}/delete")) {
                            input type="hidden" name="domain" value=(name);
                            button.danger type="submit" aria-label=(format!("Delete {name}")) { "Delete" }
                        }
                    }
                }
            } }
        } }
        (field_error(error, &f_verify, "domain", true))
        form method="post" action=(f_domain) {
            label for="domain-name" { "Add a domain" }
            input #domain-name type="text" name="domain" required placeholder="shop.example.com";
            (field_error(error, &f_domain, "domain", true))
            button type="submit" { "Add domain" }
        }
    };
    Ok(("App", "/dashboard/apps", body))
}

async fn credits_page(state: &AppState, principal: &Principal, query: Option<&str>) -> Page {
    let path = match query {
        Some(q) => format!("/api/v1/credits?{q}"),
        None => "/api/v1/credits".to_string(),
    };
    let credits = get(state, principal, &path).await?;
    let body = html! {
        h1 { "Credits" }
        div.cards { div.card { "Balance" strong { "$" (text(&credits["balance"])) } } }
        h2 { "Transactions" }
        @let page_no = credits["page"].as_u64().unwrap_or(1);
        @let per = credits["limit"].as_u64().unwrap_or(20).max(1);
        @let total = credits["total"].as_u64().unwrap_or(0);
        nav aria-label="Transaction pages" {
            @if page_no > 1 { a href=(format!("/dashboard/credits?page={}", page_no - 1)) { "Newer" } " " }
            span.muted { "Page " (page_no) " of " (total.div_ceil(per).max(1)) }
            @if page_no * per < total { " " a href=(format!("/dashboard/credits?page={}", page_no + 1)) { "Older" } }
        }
        div.scroll { table {
            thead { tr { th scope="col" { "When" } th scope="col" { "Type" } th scope="col" { "Amount" } th scope="col" { "Description" } } }
            tbody { @for t in items(&credits, "transactions") {
                tr { td { (text(&t["created_at"])) } td { (text(&t["type"])) } td { "$" (text(&t["amount"])) } td { (text(&t["description"])) } }
            } }
        } }
        h2 { "Top up" }
        p { "Top-ups are paid with x402: an agent or wallet calls " code { "POST /api/v1/topup/{amount}" } ", receives " code { "402 Payment Required" } " with the payment requirements, signs an EIP-3009 authorization for that amount of USDC and sends it again with the " code { "X-PAYMENT" } " header. The credit lands in this organization once the payment settles." }
    };
    Ok(("Credits", "/dashboard/credits", body))
}

async fn usage_page(state: &AppState, principal: &Principal, query: Option<&str>) -> Page {
    let path = match query {
        Some(q) => format!("/api/v1/usage?{q}"),
        None => "/api/v1/usage".to_string(),
    };
    let usage = get(state, principal, &path).await?;
    let by = |key: &str, name: &str| -> Vec<Point> {
        items(&usage, key)
            .iter()
            .map(|r| Point {
                label: text(&r[name]),
                value: number(&r["requests"]),
                shown: format!("{} (${})", text(&r["requests"]), text(&r["cost"])),
            })
            .collect()
    };
    let body = html! {
        h1 { "Usage" }
        form method="get" action="/dashboard/usage" {
            label for="period" { "Month" }
            input #period type="text" name="period" placeholder="YYYY-MM" value=(text(&usage["period"]));
            button.secondary type="submit" { "Show" }
        }
        p { "Requests " strong { (text(&usage["totals"]["requests"])) } " · cost " strong { "$" (text(&usage["totals"]["cost"])) } " · tokens in " (text(&usage["totals"]["inputTokens"])) " / out " (text(&usage["totals"]["outputTokens"])) }
        (bar_chart("usage-daily", "Requests per day", "requests", &daily_points(&usage, "daily", false)))
        (bar_chart("usage-cost", "Cost per day", "dollars", &daily_points(&usage, "daily", true)))
        (bar_chart("usage-model", "Requests by model", "requests", &by("byModel", "model")))
        (bar_chart("usage-app", "Requests by app", "requests", &by("byApp", "name")))
        (bar_chart("usage-key", "Requests by key", "requests", &by("byKey", "name")))
    };
    Ok(("Usage", "/dashboard/usage", body))
}

/// `POST /dashboard/...`: one form, as the API call it stands for; the page again with the
/// outcome (a key shown once, or the error next to its field).
pub async fn form(
    state: &AppState,
    principal: &Principal,
    path: &str,
    body: &[u8],
    headers: &http::HeaderMap,
) -> Response<Body> {
    let segs = segments(path);
    if segs.as_slice() == ["sign-out"] {
        return match crate::api::signin::logout(state, headers).await {
            Ok(answer) => {
                let mut response = redirect(SIGN_IN);
                if let Some(cookie) = answer.headers().get(header::SET_COOKIE) {
                    response
                        .headers_mut()
                        .insert(header::SET_COOKIE, cookie.clone());
                }
                response
            }
            Err(e) => {
                let (status, _, message, _) = e.parts();
                error_page(status, &message)
            }
        };
    }
    let fields = match form_fields(body) {
        Ok(f) => f,
        Err(e) => {
            let error = form_error_of(path, &e);
            let page = path_of_form(&segs);
            return render(
                state,
                principal,
                &page,
                None,
                None,
                Some(error),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    let page = path_of_form(&segs);
    let (form_name, outcome) = act(state, principal, &segs, &fields).await;
    match outcome {
        Ok(notice) => {
            render(
                state,
                principal,
                &page,
                None,
                Some(notice),
                None,
                StatusCode::OK,
            )
            .await
        }
        Err(e) => {
            let status = e.parts().0;
            let error = form_error_of(&form_name, &e);
            render(state, principal, &page, None, None, Some(error), status).await
        }
    }
}

/// The page a form lives on.
fn path_of_form(segs: &[&str]) -> String {
    match segs {
        ["keys", ..] => "/dashboard/keys".into(),
        ["apps", id, ..] => format!("/dashboard/apps/{id}"),
        ["apps"] => "/dashboard/apps".into(),
        _ => "/dashboard".into(),
    }
}

/// A dollar text as the JSON number the API reads exactly (`arbitrary_precision`), or the text
/// itself when it is not one (the API then names the field).
fn dollars(text: Option<&str>) -> Value {
    let text = text.unwrap_or("0");
    serde_json::from_str::<serde_json::Number>(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

async fn act(
    state: &AppState,
    principal: &Principal,
    segs: &[&str],
    fields: &[(String, String)],
) -> (String, Result<Notice, ApiError>) {
    let post = |path: String, body: Value| async move {
        call_api(state, principal, Method::POST, &path, Some(body)).await
    };
    let done = |message: &str| Notice {
        message: message.to_string(),
        secret: None,
    };
    match segs {
        ["keys"] => {
            let mut body = json!({ "name": field(fields, "name").unwrap_or_default() });
            if let Some(t) = field(fields, "type") {
                set(&mut body, "type", json!(t));
            }
            let permissions = all_of(fields, "permissions");
            if !permissions.is_empty() {
                set(&mut body, "permissions", json!(permissions));
            }
            if let Some(rate) = field(fields, "rateLimit") {
                set(
                    &mut body,
                    "rateLimit",
                    rate.parse::<u64>().map(Value::from).unwrap_or(json!(rate)),
                );
            }
            if let Some(day) = field(fields, "expires_on") {
                set(&mut body, "expires_at", json!(format!("{day}T00:00:00Z")));
            }
            let outcome = post("/api/v1/api-keys".into(), body)
                .await
                .map(|(_, v)| Notice {
                    message: format!("Key {} created.", text(&v["apiKey"]["name"])),
                    secret: Some(("Your new API key".into(), text(&v["plainKey"]))),
                });
            ("/dashboard/keys".into(), outcome)
        }
        ["keys", id, action] => {
            let form = format!("/dashboard/keys/{id}");
            let path = format!("/api/v1/api-keys/{id}");
            let outcome = match *action {
                "toggle" => {
                    let on = field(fields, "is_active") == Some("true");
                    call_api(
                        state,
                        principal,
                        Method::PATCH,
                        &path,
                        Some(json!({ "is_active": on })),
                    )
                    .await
                    .map(|_| done(if on { "Key enabled." } else { "Key disabled." }))
                }
                "regenerate" => {
                    post(format!("{path}/regenerate"), json!({}))
                        .await
                        .map(|(_, v)| Notice {
                            message: "Key regenerated: the old one no longer works.".into(),
                            secret: Some(("Your regenerated API key".into(), text(&v["plainKey"]))),
                        })
                }
                "revoke" => call_api(state, principal, Method::DELETE, &path, None)
                    .await
                    .map(|_| done("Key revoked.")),
                _ => Err(ApiError::NotFound),
            };
            (form, outcome)
        }
        ["apps"] => {
            let mut body = json!({
                "name": field(fields, "name").unwrap_or_default(),
                "app_url": field(fields, "app_url").unwrap_or_default(),
            });
            if let Some(d) = field(fields, "description") {
                set(&mut body, "description", json!(d));
            }
            let outcome = post("/api/v1/apps".into(), body)
                .await
                .map(|(_, v)| Notice {
                    message: format!("App {} created.", text(&v["app"]["name"])),
                    secret: Some(("The app's API key".into(), text(&v["apiKey"]))),
                });
            ("/dashboard/apps".into(), outcome)
        }
        ["apps", id, rest @ ..] => {
            let base = format!("/api/v1/apps/{id}");
            let form = format!("/dashboard/apps/{id}/{}", rest.join("/"));
            let outcome = match rest {
                ["monetization"] => post(
                    format!("{base}/monetization"),
                    json!({
                        "enabled": field(fields, "enabled") == Some("true"),
                        "pricing": {
                            "perRequest": dollars(field(fields, "perRequest")),
                            "perToken": dollars(field(fields, "perToken")),
                        }
                    }),
                )
                .await
                .map(|_| done("Monetization saved.")),
                ["withdraw"] => post(
                    format!("{base}/earnings/withdraw"),
                    json!({
                        "amount": dollars(field(fields, "amount")),
                        "idempotency_key": field(fields, "idempotency_key").unwrap_or_default(),
                    }),
                )
                .await
                .map(|(_, v)| done(&format!("Withdrew ${} into the organization's credits.", text(&v["amount"])))),
                ["webhook"] => post(
                    format!("{base}/webhook"),
                    json!({ "url": field(fields, "url").unwrap_or_default(), "events": all_of(fields, "events") }),
                )
                .await
                .map(|(_, v)| {
                    let secret = text(&v["secret"]);
                    Notice {
                        message: "Webhook saved.".into(),
                        secret: (!secret.is_empty()).then(|| ("The webhook's signing secret".into(), secret)),
                    }
                }),
                ["webhook", "test"] => post(format!("{base}/webhook/test"), json!({}))
                    .await
                    .map(|_| done("Test event queued: it appears in the deliveries below.")),
                ["redeliver"] => {
                    // A delivery id is `msg_` and hex: anything else never reaches a URI.
                    let delivery = field(fields, "delivery").unwrap_or_default();
                    if delivery.is_empty()
                        || !delivery
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        Err(ApiError::Validation {
                            message: "delivery: not a delivery id".into(),
                            details: json!({ "delivery": "not a delivery id" }),
                        })
                    } else {
                        post(format!("{base}/webhook/deliveries/{delivery}/redeliver"), json!({}))
                            .await
                            .map(|_| done("Redelivery queued."))
                    }
                }
                ["domains"] => post(
                    format!("{base}/domains"),
                    json!({ "domain": field(fields, "domain").unwrap_or_default() }),
                )
                .await
                .map(|_| done("Domain added: create the TXT record below, then verify.")),
                ["domains", "verify"] => post(
                    format!("{base}/domains/verify"),
                    json!({ "domain": field(fields, "domain").unwrap_or_default() }),
                )
                .await
                .and_then(|(_, v)| {
                    if v["verified"] == Value::Bool(true) {
                        Ok(done("Domain verified."))
                    } else {
                        Err(ApiError::Validation {
                            message: text(&v["error"]),
                            details: json!({ "domain": "not verified" }),
                        })
                    }
                }),
                ["domains", "delete"] => call_api(
                    state,
                    principal,
                    Method::DELETE,
                    &format!("{base}/domains"),
                    Some(json!({ "domain": field(fields, "domain").unwrap_or_default() })),
                )
                .await
                .map(|_| done("Domain deleted.")),
                _ => Err(ApiError::NotFound),
            };
            (form, outcome)
        }
        _ => ("/dashboard".into(), Err(ApiError::NotFound)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_plus_and_percent_and_refuse_what_is_not_a_form() {
        let fields = form_fields(b"name=From+the+form&app_url=https%3A%2F%2Fa.example&x=").unwrap();
        assert_eq!(field(&fields, "name"), Some("From the form"));
        assert_eq!(field(&fields, "app_url"), Some("https://a.example"));
        assert_eq!(field(&fields, "x"), None, "an empty field is absent");
        assert_eq!(
            all_of(&form_fields(b"p=chat&p=apps").unwrap(), "p"),
            vec!["chat", "apps"]
        );
        assert!(form_fields(b"a=%ZZ").is_err());
        assert!(form_fields(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn dollars_keep_their_text_or_let_the_api_name_the_field() {
        assert_eq!(dollars(Some("0.000001")).to_string(), "0.000001");
        assert_eq!(dollars(None).to_string(), "0");
        assert_eq!(dollars(Some("ten")), Value::String("ten".into()));
    }

    proptest::proptest! {
        #[test]
        fn any_form_body_parses_or_errs_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = form_fields(&body);
        }

        #[test]
        fn encoded_fields_come_back(pairs in proptest::collection::vec(("[a-z]{1,8}", "\\PC{0,20}"), 0..6)) {
            let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            let body = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
            let back = form_fields(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(back, pairs);
        }
    }
}
