//! Browser sessions (SPEC §5.3): the `eliza_session` cookie holds 32 random bytes, base64url; the
//! store keeps only its sha256 with the expiry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::PublicUrl;

pub const COOKIE_NAME: &str = "eliza_session";
/// Session lifetime: 7 days, in seconds.
pub const SESSION_MAX_AGE_SECS: i64 = 7 * 24 * 3600;

/// A session token (the cookie value): shown once, in `Set-Cookie`; `Debug` redacts it.
pub struct SessionToken(String);

impl SessionToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// A new session token: 32 random bytes, base64url.
pub fn new_session_token() -> SessionToken {
    SessionToken(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &str, public_url: &PublicUrl) -> String {
    let secure = if public_url.https { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={SESSION_MAX_AGE_SECS}{secure}"
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clearing_cookie(public_url: &PublicUrl) -> String {
    let secure = if public_url.https { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// More than one `eliza_session`, or a value that is not 43 base64url characters.
    Malformed,
}

/// The session token from the `Cookie` headers, if one is present.
pub fn session_token<'a>(
    cookie_headers: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, CookieError> {
    let mut found = None;
    for header in cookie_headers {
        let Ok(header) = std::str::from_utf8(header) else {
            continue;
        };
        for pair in header.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() != COOKIE_NAME {
                continue;
            }
            if found.is_some() {
                return Err(CookieError::Malformed);
            }
            let value = value.trim();
            let valid = value.len() == 43
                && value
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
            if !valid {
                return Err(CookieError::Malformed);
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// The CSRF rule: a state-changing request authenticated by the cookie must come from our own
/// origin, by `Origin`, or else by `Referer`.
pub fn same_origin(origin: Option<&[u8]>, referer: Option<&[u8]>, public_url: &PublicUrl) -> bool {
    let ours = public_url.origin.as_bytes();
    match (origin, referer) {
        (Some(origin), _) => origin.eq_ignore_ascii_case(ours),
        (None, Some(referer)) => {
            referer.len() >= ours.len()
                && referer
                    .get(..ours.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(ours))
                && matches!(referer.get(ours.len()), None | Some(b'/'))
        }
        (None, None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> PublicUrl {
        PublicUrl::parse("https://cloud.example.com").unwrap()
    }

    #[test]
    fn cookie_flags() {
        let secret = new_session_token();
        assert_eq!(format!("{secret:?}"), "SessionToken(<redacted>)");
        let token = secret.expose();
        assert_eq!(token.len(), 43);
        let c = session_cookie(token, &url());
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"));
        assert!(c.contains("Max-Age=604800") && c.ends_with("; Secure"));
        let plain = PublicUrl::parse("http://localhost:3000").unwrap();
        assert!(!session_cookie(token, &plain).contains("Secure"));
    }

    #[test]
    fn finds_the_token() {
        let token = "A".repeat(43);
        let header = format!("a=b; {COOKIE_NAME}={token}; c=d");
        assert_eq!(
            session_token([header.as_bytes()].into_iter()),
            Ok(Some(token.as_str()))
        );
        assert_eq!(session_token([&b"a=b"[..]].into_iter()), Ok(None));
        let twice = format!("{COOKIE_NAME}={token}; {COOKIE_NAME}={token}");
        assert_eq!(
            session_token([twice.as_bytes()].into_iter()),
            Err(CookieError::Malformed)
        );
        let short = format!("{COOKIE_NAME}=abc");
        assert_eq!(
            session_token([short.as_bytes()].into_iter()),
            Err(CookieError::Malformed)
        );
    }

    #[test]
    fn origin_rule() {
        let u = url();
        assert!(same_origin(Some(b"https://cloud.example.com"), None, &u));
        assert!(!same_origin(
            Some(b"https://evil.example"),
            Some(b"https://cloud.example.com/x"),
            &u
        ));
        assert!(same_origin(
            None,
            Some(b"https://cloud.example.com/settings"),
            &u
        ));
        assert!(!same_origin(
            None,
            Some(b"https://cloud.example.com.evil.io/"),
            &u
        ));
        assert!(!same_origin(None, None, &u));
    }
}
