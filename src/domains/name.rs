//! Custom domain names (SPEC §11): an ASCII hostname, lowercased on input, no IDN (`xn--`)
//! label, no trailing dot, 4..=253 characters, at least two labels of 1..=63 letters, digits and
//! inner hyphens, a last label that is not all digits (so no IP address), and never the apps
//! domain or a name under it.

/// Why a name is refused (for the 400's `details.domain`).
pub fn check_domain(text: &str, apps_domain: &str) -> Result<String, &'static str> {
    let name = text.trim().to_ascii_lowercase();
    if !name.is_ascii() {
        return Err("must be an ASCII hostname (internationalized names are not accepted)");
    }
    if name.ends_with('.') {
        return Err("must not end with a dot");
    }
    if !(4..=253).contains(&name.len()) {
        return Err("must be 4 to 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("must have at least two labels (example.com)");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("labels may hold letters, digits and hyphens only");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label must not start or end with a hyphen");
        }
        if label.starts_with("xn--") {
            return Err("internationalized (xn--) labels are not accepted");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("must be a name, not an IP address");
    }
    let apps = apps_domain.to_ascii_lowercase();
    if name == apps || name.ends_with(&format!(".{apps}")) {
        return Err("must not be the apps domain or a name under it");
    }
    Ok(name)
}

/// The host of a `Host` header or SNI name as the host map keys it: lowercased, without a port
/// or a trailing dot; `None` for an IP literal or a malformed value.
pub fn host_key(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let bare = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let bare = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
    if bare.is_empty()
        || bare.split('.').any(str::is_empty)
        || bare.len() > 253
        || !bare
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || bare.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return None;
    }
    Some(bare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_pass_and_fail() {
        assert_eq!(
            check_domain(" App.Example.COM ", "apps.localhost"),
            Ok("app.example.com".into())
        );
        assert_eq!(check_domain("a.io", "apps.localhost"), Ok("a.io".into()));
        for bad in [
            "localhost",
            "a.b",
            "example.com.",
            "-a.example.com",
            "a-.example.com",
            "a..example.com",
            "xn--nxasmq6b.com",
            "münchen.de",
            "1.2.3.4",
            "a_b.example.com",
            "shop.apps.localhost",
            "apps.localhost",
            "exa mple.com",
        ] {
            assert!(check_domain(bad, "apps.localhost").is_err(), "{bad}");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(check_domain(&long, "apps.localhost").is_err());
        let longest = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(longest.len() > 253 && check_domain(&longest, "x.y").is_err());
    }

    #[test]
    fn hosts_are_keyed_without_port_or_dot() {
        assert_eq!(
            host_key("Shop.Apps.Localhost:3000").as_deref(),
            Some("shop.apps.localhost")
        );
        assert_eq!(host_key("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host_key("127.0.0.1:3000"), None);
        assert_eq!(host_key("[::1]:3000"), None);
        assert_eq!(host_key("a b"), None);
        assert_eq!(host_key("x.com:abc"), None);
        assert_eq!(host_key("5.."), None);
        assert_eq!(host_key(".x.com"), None);
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_accepted_again_as_it_is(text in "[a-zA-Z0-9.-]{0,40}|\\PC{0,40}") {
            if let Ok(name) = check_domain(&text, "apps.localhost") {
                prop_assert_eq!(check_domain(&name, "apps.localhost"), Ok(name.clone()));
                prop_assert_eq!(host_key(&name), Some(name));
            }
            let _ = host_key(&text);
        }
    }
}
