//! The pieces of RFC 3986 that sign-in messages use: an authority (`[userinfo@]host[:port]`) and
//! an absolute URI (`scheme:` then URI characters). Checks only, no normalisation.

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(c: u8) -> bool {
    matches!(
        c,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_gen_delim(c: u8) -> bool {
    matches!(c, b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@')
}

/// Every `%` is followed by two hex digits.
fn escapes_are_valid(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        if c == b'%' {
            let ok = s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`
/// EIP-4361's statement: one non-empty line of `reserved / unreserved / " "` (gen-delims,
/// sub-delims, ALPHA, DIGIT, `-._~` and space; no `%`, quotes, `<>\\^` backtick or `{|}`).
pub fn is_statement(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric() || c == b' ' || b"-._~:/?#[]@!$&'()*+,;=".contains(&c)
        })
}

pub fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|c| c.is_ascii_alphabetic())
        && bytes.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// `pchar*`: unreserved, escapes, sub-delims, `:` and `@` (a SIWE Request ID).
pub fn is_pchars(s: &str) -> bool {
    s.bytes()
        .all(|c| is_unreserved(c) || is_sub_delim(c) || matches!(c, b':' | b'@' | b'%'))
        && escapes_are_valid(s.as_bytes())
}

/// `authority = [ userinfo "@" ] host [ ":" port ]`, host an IP literal in brackets, or a
/// reg-name / IPv4 of unreserved, escapes and sub-delims; not empty.
pub fn is_authority(s: &str) -> bool {
    let (userinfo, host_port) = match s.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, s),
    };
    if let Some(u) = userinfo {
        let ok = u
            .bytes()
            .all(|c| is_unreserved(c) || is_sub_delim(c) || c == b':' || c == b'%');
        if !ok || !escapes_are_valid(u.as_bytes()) {
            return false;
        }
    }
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        match rest.split_once(']') {
            Some((literal, after)) => {
                let ok = !literal.is_empty()
                    && literal
                        .bytes()
                        .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.' | b'v' | b'V'));
                if !ok {
                    return false;
                }
                if after.is_empty() {
                    (None, None)
                } else if let Some(port) = after.strip_prefix(':') {
                    (None, Some(port))
                } else {
                    return false;
                }
            }
            None => return false,
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host_port), None),
        }
    };
    if let Some(host) = host {
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|c| is_unreserved(c) || is_sub_delim(c) || c == b'%')
            && escapes_are_valid(host.as_bytes());
        if !ok {
            return false;
        }
    }
    port.is_none_or(|p| p.bytes().all(|c| c.is_ascii_digit()) && p.len() <= 5)
}

/// An absolute URI: a scheme, `:`, then only URI characters (unreserved, reserved, escapes).
pub fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    is_scheme(scheme)
        && rest
            .bytes()
            .all(|c| is_unreserved(c) || is_sub_delim(c) || is_gen_delim(c) || c == b'%')
        && escapes_are_valid(rest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        for ok in [
            "service.org",
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost:8080",
            "test@127.0.0.1:8080",
            "[::cafe]",
            "[::1]:3000",
            "xn--bcher-kva.example",
        ] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "#notrfc4501",
            "a b",
            "host:port",
            "[::1",
            "[::1]x",
            "é.org",
            "a/b",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }

    #[test]
    fn uris() {
        for ok in [
            "https://service.org/login",
            "https://127.0.0.1/?query=one#begin",
            "https://[::cafe]",
            "ipfs://Qme7ss3ARVgxv6rXqVPiikMJ8u2NLgmgszg13pYrDKEoiu",
            "urn:isbn:0451450523",
        ] {
            assert!(is_uri(ok), "{ok}");
        }
        for bad in [
            ":not_a_rfc3986_valid_uri_",
            "",
            "no scheme",
            "1http://x",
            "http://a b",
            "http://%zz",
        ] {
            assert!(!is_uri(bad), "{bad}");
        }
    }
}
