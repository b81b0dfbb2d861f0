//! Site-domain normalisation: what a WordPress plugin sends (`Shop.Example.COM:443.`, `bücher.de`)
//! becomes the one form the registry stores (`shop.example.com`, `xn--bcher-kva.de`).
//!
//! Rules, in order: trim surrounding white space; reject anything that is not a bare host (a
//! scheme, path, query, fragment, user info, white space or control characters inside); strip
//! one `:port` (digits only); strip one trailing dot; map to ASCII with IDNA (UTS #46, which
//! also lower-cases and rejects disallowed code points); then check the result as a DNS host name
//! (labels of 1-63 letters, digits and inner hyphens, 253 characters in all). IP literals are
//! rejected: a site is registered by name.

use crate::ids::{IdError, SiteDomain};

/// Normalises a raw domain, or says why it cannot be one.
pub fn normalize(raw: &str) -> Result<SiteDomain, IdError> {
    let err = |rule: &'static str| IdError { kind: "site domain", value: raw.chars().take(80).collect(), rule };
    let s = raw.trim();
    if s.is_empty() {
        return Err(err("is empty"));
    }
    if s.len() > 300 {
        return Err(err("is too long"));
    }
    if s.chars().any(|c| c.is_control() || c.is_whitespace() || "/\\?#@[]%\"'<>`{}|^".contains(c)) {
        return Err(err("must be a bare host name: no scheme, path, user info, brackets or spaces"));
    }
    let host = match s.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return Err(err("has a malformed port")),
        None => s,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.starts_with('.') || host.contains("..") {
        return Err(err("has an empty label"));
    }
    let ascii = idna::domain_to_ascii_strict(host).map_err(|_| err("is not a valid internationalised domain name"))?;
    if ascii.parse::<std::net::Ipv4Addr>().is_ok() || ascii.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err("is an IP address; register the site by name"));
    }
    SiteDomain::parse(&ascii).map_err(|e| err(e.rule))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_what_plugins_send() {
        for (raw, want) in [
            ("example.com", "example.com"),
            ("  Shop.Example.COM  ", "shop.example.com"),
            ("example.com:443", "example.com"),
            ("example.com.", "example.com"),
            ("EXAMPLE.com.:8080", "example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
            ("BÜCHER.de", "xn--bcher-kva.de"),
            ("xn--bcher-kva.de", "xn--bcher-kva.de"),
            ("münchen.example", "xn--mnchen-3ya.example"),
            ("localhost", "localhost"),
            // UTS #46 drops default-ignorable code points, so this is the same domain, not a lookalike.
            ("example.com\u{200b}", "example.com"),
        ] {
            assert_eq!(normalize(raw).map(|d| d.to_string()), Ok(want.to_string()), "{raw:?}");
        }
    }

    #[test]
    fn rejects_hostile_input() {
        for raw in [
            "",
            "   ",
            "https://example.com",
            "example.com/path",
            "example.com?x=1",
            "example.com#frag",
            "user@example.com",
            "user:pass@example.com",
            "exa mple.com",
            "example\n.com",
            "exa\u{0}mple.com",
            "example..com",
            ".example.com",
            "example.com..",
            "example.com:",
            "example.com:abc",
            "example.com:123456",
            "example.com:80:80",
            "[::1]",
            "127.0.0.1",
            "10.0.0.1:80",
            "-example.com",
            "example-.com",
            "exa_mple.com",
            "SITE#evil.com",
            "tenant#x",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(130)),
            "\u{202e}moc.elpmaxe",
            "%65xample.com",
        ] {
            assert!(normalize(raw).is_err(), "{raw:?} must be rejected, got {:?}", normalize(raw));
        }
    }

    proptest! {
        /// Whatever comes in, what comes out is a valid, already-normal domain.
        #[test]
        fn output_is_stable_and_valid(raw in "\\PC{0,40}") {
            if let Ok(d) = normalize(&raw) {
                prop_assert!(SiteDomain::parse(d.as_str()).is_ok());
                prop_assert_eq!(normalize(d.as_str()).unwrap(), d.clone());
                prop_assert!(!d.as_str().contains('#'));
            }
        }
    }
}
