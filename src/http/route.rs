//! The router: `(method, path)` → [`Route`] by one pure function, unit-tested without a socket.
//! Each route declares what it needs in [`Route::access`], a `match` with no default arm, so a new
//! route cannot be added without deciding who may call it.

use http::Method;
use uuid::Uuid;

use crate::auth::permissions::Resource;

/// What a route needs from the caller before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential: operations endpoints, and answers that touch no data (405, CORS).
    Public,
    /// Any valid credential of any method (SPEC §4's last row).
    AnyCredential,
    /// A credential whose permissions allow this resource at the method's level
    /// (GET/HEAD read, others write).
    Permission(Resource),
    /// A credential without a permission list: key management (SPEC §4).
    Unrestricted,
    /// No credential, but work is done: one bucket per client address (SPEC §8).
    PerClientAddress,
    /// A credential if one is presented (then it must be valid), else one bucket per client
    /// address: the x402 top-up, which a payment alone may call.
    CredentialOrClientAddress,
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
    /// `GET` lists, `POST` creates.
    ApiKeys,
    /// `PATCH` updates, `DELETE` deletes.
    ApiKey(Uuid),
    ApiKeyRegenerate(Uuid),
    SiweNonce,
    SiweVerify,
    SiwsNonce,
    SiwsVerify,
    Logout,
    /// `POST /api/v1/topup/{amount}`: the amount in micro-dollars, `None` when it is not a
    /// dollar amount.
    Topup(Option<i64>),
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// Most path segments any route has; deeper paths are 404 without further work.
const MAX_SEGMENTS: usize = 8;

const GET: &[Method] = &[Method::GET, Method::HEAD];
const GET_ALLOW: &str = "GET, HEAD";
const GET_POST: &[Method] = &[Method::GET, Method::HEAD, Method::POST];
const GET_POST_ALLOW: &str = "GET, HEAD, POST";
const PATCH_DELETE: &[Method] = &[Method::PATCH, Method::DELETE];
const PATCH_DELETE_ALLOW: &str = "PATCH, DELETE";
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
            Route::ApiKeys => "api_keys",
            Route::ApiKey(_) => "api_key",
            Route::ApiKeyRegenerate(_) => "api_key_regenerate",
            Route::SiweNonce => "siwe_nonce",
            Route::SiweVerify => "siwe_verify",
            Route::SiwsNonce => "siws_nonce",
            Route::SiwsVerify => "siws_verify",
            Route::Logout => "logout",
            Route::Topup(_) => "topup",
            Route::NotFound => "not_found",
            Route::MethodNotAllowed { .. } => "method_not_allowed",
        }
    }

    /// Whether the route takes a credential (every route but the public and per-address ones).
    pub fn authenticates(self) -> bool {
        !matches!(self.access(), Access::Public | Access::PerClientAddress)
    }

    pub const fn access(self) -> Access {
        match self {
            Route::Healthz | Route::Readyz | Route::Metrics => Access::Public,
            Route::CorsPreflight | Route::MethodNotAllowed { .. } => Access::Public,
            // The catch-all is the strictest: a path no route knows answers 404 only to an
            // unrestricted credential, so nothing can be learned about it without one, and
            // a route that is ever forgotten here fails closed.
            Route::NotFound => Access::Unrestricted,
            Route::Whoami | Route::Dashboard | Route::Credits => Access::AnyCredential,
            Route::ApiKeys | Route::ApiKey(_) | Route::ApiKeyRegenerate(_) => Access::Unrestricted,
            Route::SiweNonce | Route::SiweVerify | Route::SiwsNonce | Route::SiwsVerify => {
                Access::PerClientAddress
            }
            // Logout acts on the cookie it is sent with (and checks its origin) or on nothing.
            Route::Logout => Access::Public,
            Route::Topup(_) => Access::CredentialOrClientAddress,
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
        ["readyz"] => only(method, GET, GET_ALLOW, Route::Readyz),
        ["metrics"] => only(method, GET, GET_ALLOW, Route::Metrics),
        ["api", "auth", "siwe", "nonce"] => only(method, GET, GET_ALLOW, Route::SiweNonce),
        ["api", "auth", "siwe", "verify"] => only(method, POST, POST_ALLOW, Route::SiweVerify),
        ["api", "auth", "siws", "nonce"] => only(method, GET, GET_ALLOW, Route::SiwsNonce),
        ["api", "auth", "siws", "verify"] => only(method, POST, POST_ALLOW, Route::SiwsVerify),
        ["api", "auth", "logout"] => only(method, POST, POST_ALLOW, Route::Logout),
        ["api", "v1", rest @ ..] => match rest {
            ["auth", "whoami"] => only(method, GET, GET_ALLOW, Route::Whoami),
            ["dashboard"] => only(method, GET, GET_ALLOW, Route::Dashboard),
            ["credits"] => only(method, GET, GET_ALLOW, Route::Credits),
            ["api-keys"] => only(method, GET_POST, GET_POST_ALLOW, Route::ApiKeys),
            ["api-keys", key] => match id(key) {
                Some(key) => only(method, PATCH_DELETE, PATCH_DELETE_ALLOW, Route::ApiKey(key)),
                None => Route::NotFound,
            },
            ["topup", amount] => only(method, POST, POST_ALLOW, Route::Topup(dollars(amount))),
            ["api-keys", key, "regenerate"] => match id(key) {
                Some(key) => only(method, POST, POST_ALLOW, Route::ApiKeyRegenerate(key)),
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
        for path in [
            "",
            "/",
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
            Route::ApiKeys
        );
        assert_eq!(
            parse_route(&Method::POST, "/api/v1/api-keys"),
            Route::ApiKeys
        );
        assert_eq!(
            parse_route(&Method::PUT, "/api/v1/api-keys"),
            Route::MethodNotAllowed {
                allow: GET_POST_ALLOW
            }
        );
        assert_eq!(
            parse_route(&Method::PATCH, &format!("/api/v1/api-keys/{id}")),
            Route::ApiKey(uuid)
        );
        assert_eq!(
            parse_route(&Method::GET, &format!("/api/v1/api-keys/{id}")),
            Route::MethodNotAllowed {
                allow: PATCH_DELETE_ALLOW
            }
        );
        assert_eq!(
            parse_route(&Method::POST, &format!("/api/v1/api-keys/{id}/regenerate")),
            Route::ApiKeyRegenerate(uuid)
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
    fn declared_access() {
        assert_eq!(Route::Whoami.access(), Access::AnyCredential);
        assert_eq!(Route::Healthz.access(), Access::Public);
        assert_eq!(Route::ApiKeys.access(), Access::Unrestricted);
        assert_eq!(Route::Credits.access(), Access::AnyCredential);
    }

    proptest! {
        #[test]
        fn never_panics_and_is_total(method in "[A-Z]{1,8}", path in "(/[a-z0-9%._-]{0,12}){0,10}/?") {
            crate::fuzzing::route_parser(format!("{method} {path}").as_bytes());
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
