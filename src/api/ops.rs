//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the database answers) and
//! `/metrics` (Prometheus text).

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::state::AppState;
use crate::web::body::{Body, full, json_body};
use crate::web::error::ApiError;

pub fn healthz() -> Response<Body> {
    json_body(StatusCode::OK, &json!({ "status": "ok" }))
}

pub async fn readyz(state: &AppState) -> Result<Response<Body>, ApiError> {
    let store = state.store.clone();
    let ping = tokio::task::spawn_blocking(move || store.ping()).await;
    match ping {
        Ok(Ok(())) => Ok(json_body(StatusCode::OK, &json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "readiness check failed");
            Err(ApiError::ServiceUnavailable(
                "Database is not answering".into(),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "readiness check task failed");
            Err(ApiError::ServiceUnavailable(
                "Database is not answering".into(),
            ))
        }
    }
}

pub fn metrics(state: &AppState) -> Response<Body> {
    let mut text = state.metrics.render();
    if let Some(sender) = &state.webhooks {
        use std::fmt::Write;
        for (name, kind, help, value) in [
            (
                "eliza_webhook_attempts_total",
                "counter",
                "Webhook delivery attempts made by this process.",
                sender.attempts(),
            ),
            (
                "eliza_webhook_in_flight",
                "gauge",
                "Webhook deliveries being attempted now (at most the worker pool).",
                sender.in_flight() as u64,
            ),
        ] {
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {kind}");
            let _ = writeln!(text, "{name} {value}");
        }
    }
    let mut response = Response::new(full(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
