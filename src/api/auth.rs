//! `GET /api/v1/auth/whoami`: the cheapest authenticated route, for an SDK to check its
//! credential (and for the load benchmark).

use http::{Response, StatusCode};
use serde::Serialize;

use super::{KeySummaryView, OrgView, UserView, key_summary_view, org_view, user_view};
use crate::auth::Principal;
use crate::web::body::{Body, json_body};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Whoami<'a> {
    auth_method: &'static str,
    user: UserView<'a>,
    organization: OrgView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<KeySummaryView<'a>>,
}

pub fn whoami(principal: &Principal) -> Response<Body> {
    json_body(
        StatusCode::OK,
        &Whoami {
            auth_method: principal.method.as_str(),
            user: user_view(principal.user()),
            organization: org_view(principal.organization()),
            api_key: principal.api_key().map(key_summary_view),
        },
    )
}
