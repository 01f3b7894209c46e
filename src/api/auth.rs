//! `GET /api/v1/auth/whoami`: the cheapest authenticated route, for an SDK to check its
//! credential (and for the load benchmark). The answer is serialised once per identity snapshot
//! and then served from those bytes (`Principal::whoami_bytes`): an API key's snapshot sits in
//! the key cache and is dropped with its entry, so a change to the key, its user or its
//! organization shows on the next request like everything else.

use http::Response;
use serde::Serialize;

use super::{KeySummaryView, OrgView, UserView, key_summary_view, org_view, user_view};
use crate::auth::Principal;
use crate::web::body::{Body, full};
use crate::web::error::ApiError;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Whoami<'a> {
    auth_method: &'static str,
    user: UserView<'a>,
    organization: OrgView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<KeySummaryView<'a>>,
}

pub fn whoami(principal: &Principal) -> Result<Response<Body>, ApiError> {
    let bytes = principal.whoami_bytes(|| {
        let answer = Whoami {
            auth_method: principal.method.as_str(),
            user: user_view(principal.user()),
            organization: org_view(principal.organization()),
            api_key: principal.api_key().map(key_summary_view),
        };
        let mut out = Vec::with_capacity(640);
        match serde_json::to_writer(&mut out, &answer) {
            Ok(()) => bytes::Bytes::from(out),
            // Serialising our own views cannot fail; if it did, answer without the cache.
            Err(_) => bytes::Bytes::new(),
        }
    });
    if bytes.is_empty() {
        return Err(ApiError::Internal);
    }
    let mut response = Response::new(full(bytes));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
