//! Where a webhook may go (SPEC §10): an http(s) URL whose every resolved address is public,
//! unless `--allow-private-webhooks`. The check runs after DNS resolution and the connection goes
//! to an address that was checked, so a name that resolves to a private address (or changes to
//! one later: DNS rebinding) is refused all the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest webhook URL.
pub const MAX_URL: usize = 2048;

/// A parsed target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// As in the URL (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, `/` at least.
    pub path: String,
}

impl Target {
    /// The `Host` header: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        if (self.https && self.port == 443) || (!self.https && self.port == 80) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The name for DNS and TLS: an IPv6 literal without brackets.
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// Parses a webhook URL: http or https, a host, no user info, no fragment, at most [`MAX_URL`]
/// bytes.
pub fn parse_target(url: &str) -> Result<Target, String> {
    if url.len() > MAX_URL {
        return Err(format!("at most {MAX_URL} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains('#') {
        return Err("must be a URL without spaces or a fragment".into());
    }
    let uri: http::Uri = url.parse().map_err(|_| "is not a URL".to_string())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must be an http or https URL".into()),
    };
    let authority = uri.authority().ok_or("must name a host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry user info".into());
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err("must name a host".into());
    }
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    if port == 0 {
        return Err("must not use port 0".into());
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let path = if path.is_empty() { "/".into() } else { path };
    Ok(Target {
        https,
        host,
        port,
        path,
    })
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    a == 0 // 0.0.0.0/8
        || a == 10
        || (a == 100 && (64..128).contains(&b)) // 100.64/10
        || a == 127
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || a >= 224 // 224/4 and 240/4
}

/// Whether an address is one a webhook may not reach without `--allow-private-webhooks`
/// (SPEC §10's list, IPv4-mapped and NAT64 forms included).
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6 == Ipv6Addr::UNSPECIFIED || v6 == Ipv6Addr::LOCALHOST {
                return true;
            }
            // ::ffff:0:0/96 (IPv4-mapped) and 64:ff9b::/96 (NAT64): the IPv4 inside decides.
            let embedded = |s: &[u16; 8]| {
                Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
            };
            if s[..6] == [0, 0, 0, 0, 0, 0xffff] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return forbidden_v4(embedded(&s));
            }
            (s[0] & 0xfe00) == 0xfc00 // fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // fe80::/10
                || (s[0] & 0xff00) == 0xff00 // ff00::/8
        }
    }
}

/// The addresses to connect to: every resolved address checked; one forbidden address refuses
/// the target (a name with a private address among public ones is not safe to call).
pub fn checked(
    addresses: &[IpAddr],
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    if !allow_private && let Some(bad) = addresses.iter().find(|ip| forbidden(**ip)) {
        return Err(format!(
            "resolves to {bad}, a private, loopback, link-local or reserved address \
             (the server allows those only with --allow-private-webhooks)"
        ));
    }
    Ok(addresses
        .iter()
        .map(|ip| SocketAddr::new(*ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_specifications_ranges_are_forbidden() {
        for bad in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.1.1",
            "223.255.255.255",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "fec0::1",
        ] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn targets_parse() {
        let t = parse_target("https://Hooks.Example.com/in?x=1").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/in?x=1")
        );
        assert_eq!(t.host_header(), "hooks.example.com");
        let t = parse_target("http://[::1]:8080").unwrap();
        assert_eq!((t.bare_host(), t.port, t.path.as_str()), ("::1", 8080, "/"));
        assert_eq!(t.host_header(), "[::1]:8080");
        for bad in [
            "ftp://x.io",
            "https://",
            "https://u:p@x.io/",
            "x.io/hook",
            "https://x.io/#f",
            "https://x .io",
            "https://x.io:0/",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_private_address_refuses_the_name() {
        let public: IpAddr = "1.1.1.1".parse().unwrap();
        let private: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(checked(&[public, private], 443, false).is_err());
        assert_eq!(checked(&[public], 443, false).unwrap().len(), 1);
        assert_eq!(
            checked(&[private], 80, true).unwrap(),
            vec![SocketAddr::new(private, 80)]
        );
    }

    proptest! {
        #[test]
        fn mapped_forms_decide_like_their_ipv4(a: u8, b: u8, c: u8, d: u8) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let nat64 = IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])));
            prop_assert_eq!(forbidden(mapped), forbidden(IpAddr::V4(v4)));
            prop_assert_eq!(forbidden(nat64), forbidden(IpAddr::V4(v4)));
        }

        #[test]
        fn any_text_is_a_target_or_not_without_panic(text in "\\PC{0,80}") {
            if let Ok(t) = parse_target(&text) {
                prop_assert!(t.path.starts_with('/') || t.path.starts_with('?') || t.path.starts_with('*'));
            }
        }
    }
}
