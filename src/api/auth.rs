//! `GET /api/v1/auth/whoami`: the cheapest authenticated route, for an SDK to check its
//! credential (and for the load benchmark).

use http::{Response, StatusCode};
use serde_json::json;

use super::{key_summary_view, org_view, user_view};
use crate::auth::Principal;
use crate::http::body::{Body, json_body};

pub fn whoami(principal: &Principal) -> Response<Body> {
    let mut body = json!({
        "authMethod": principal.method.as_str(),
        "user": user_view(principal.user()),
        "organization": org_view(principal.organization(), None),
    });
    if let (Some(key), Some(obj)) = (principal.api_key(), body.as_object_mut()) {
        obj.insert("apiKey".into(), key_summary_view(key));
    }
    json_body(StatusCode::OK, &body)
}
