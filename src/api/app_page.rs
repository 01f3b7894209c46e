//! An app's public page (SPEC §11): what its subdomain and verified domains answer. `GET /` is
//! `{id, name, description, logo_url, website_url}` as JSON, or a small HTML page (maud, escaped
//! by construction) to a browser that asks for `text/html`; everything else there is 404.

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::state::AppState;
use crate::store::apps::{AppRecord, get_app};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;

fn wants_html(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

fn html(app: &AppRecord) -> String {
    maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (app.name) }
                style { "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#111;background:#fff}img{max-width:6rem}" }
            }
            body {
                main {
                    @if let Some(logo) = &app.logo_url {
                        img src=(logo) alt="";
                    }
                    h1 { (app.name) }
                    @if let Some(d) = &app.description {
                        p { (d) }
                    }
                    @if let Some(site) = &app.website_url {
                        p { a href=(site) { (site) } }
                    }
                }
            }
        }
    }
    .into_string()
}

pub async fn page(
    state: &AppState,
    parts: &http::request::Parts,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    if !matches!(parts.method, Method::GET | Method::HEAD) || parts.uri.path() != "/" {
        return Err(ApiError::NotFound);
    }
    let app = state
        .store
        .read_blocking(move |txn| get_app(txn, id))
        .await?
        .filter(|a| a.is_active)
        .ok_or(ApiError::NotFound)?;
    if wants_html(parts) {
        let mut response = Response::new(crate::web::body::full(html(&app)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(response);
    }
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "id": app.id,
            "name": app.name,
            "description": app.description,
            "logo_url": app.logo_url,
            "website_url": app.website_url,
        }),
    ))
}
