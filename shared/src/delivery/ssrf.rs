//! The outbound-request guard: which addresses a webhook may be delivered to, and what a failed send means.
//!
//! Tenants choose their destination URLs, so a URL is untrusted input that points our worker at a network of
//! its choosing. The policy refuses every address that is not on the public internet: loopback (unless
//! [`AddressPolicy::allow_loopback`], for development), private, link-local and the cloud metadata
//! endpoints, carrier-grade NAT, multicast, broadcast, benchmarking and reserved ranges, IPv6 unique-local
//! and site-local, and IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4), which are
//! judged by that IPv4 address.
//!
//! The check happens when a request is sent, never only when a destination is created: the name's DNS
//! answer belongs to whoever controls the name and may change at any time. It happens inside the DNS
//! resolver ([`GuardedResolver`]) because reqwest connects only to the addresses its resolver returned, so
//! there is no window between check and connect in which a rebinding answer could slip in. IP-literal hosts
//! never reach the resolver, so [`check_url`] must be called on every URL before it is sent, redirects
//! included (or redirects disabled).
//!
//! This module must never let a request through on an address it has not vetted, and its error
//! descriptions must never carry the URL's credentials.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Which otherwise refused addresses are allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Permit 127.0.0.0/8 and ::1, so a developer can deliver to a receiver on their own machine.
    pub allow_loopback: bool,
}

const LOOPBACK: &str = "loopback";

/// A destination resolved to an address the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to send to {host} ({ip}): {reason} address{}", loopback_hint(.reason))]
pub struct BlockedAddress {
    pub host: String,
    pub ip: IpAddr,
    pub reason: &'static str,
}

fn loopback_hint(reason: &str) -> &'static str {
    if reason == LOOPBACK {
        "; set DELIVERY_ALLOW_LOOPBACK=true to allow loopback in development"
    } else {
        ""
    }
}

/// The destination's host name could not be resolved; kept apart from [`BlockedAddress`] because it is
/// usually transient and so worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}")]
pub struct DnsError {
    pub host: String,
    #[source]
    pub source: io::Error,
}

/// Refuses `ip` unless it is a public address (or loopback allowed by `policy`).
#[cfg(test)]
fn check_ip(ip: IpAddr, policy: AddressPolicy) -> Result<(), BlockedAddress> {
    check_ip_for_host(&ip.to_string(), ip, policy)
}

fn check_ip_for_host(host: &str, ip: IpAddr, policy: AddressPolicy) -> Result<(), BlockedAddress> {
    let reason = match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    };
    match reason {
        None => Ok(()),
        Some(LOOPBACK) if policy.allow_loopback => Ok(()),
        Some(reason) => Err(BlockedAddress { host: host.to_owned(), ip, reason }),
    }
}

/// Why an IPv4 address is refused, if it is. Order matters where ranges nest: metadata before link-local,
/// broadcast before reserved.
fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = if a == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        LOOPBACK
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) {
        "metadata"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && b & 0xc0 == 64 {
        "carrier-grade NAT"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignment"
    } else if a == 198 && b & 0xfe == 18 {
        "benchmarking"
    } else if a & 0xf0 == 240 {
        "reserved"
    } else {
        return None;
    };
    Some(reason)
}

/// The AWS instance metadata service's IPv6 address.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why an IPv6 address is refused, if it is.
fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some(LOOPBACK);
    }
    // The kernel routes these to the embedded IPv4 address (or a gateway does), so that address decides.
    if let Some(v4) = embedded_v4(ip) {
        return blocked_v4(v4);
    }
    let first = ip.segments()[0];
    let reason = if ip == AWS_METADATA_V6 {
        "metadata"
    } else if ip.is_multicast() {
        "multicast"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xffc0 == 0xfec0 {
        "site-local"
    } else if first & 0xfe00 == 0xfc00 {
        "unique local"
    } else {
        return None;
    };
    Some(reason)
}

/// The IPv4 address carried by an IPv4-mapped (::ffff:0:0/96), IPv4-compatible (::/96), NAT64
/// (64:ff9b::/96) or 6to4 (2002::/16) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let from_segments = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(from_segments(hi, lo)),
        [0x2002, hi, lo, ..] => Some(from_segments(hi, lo)),
        _ => None,
    }
}

/// Refuses a URL whose host is a refused IP literal. Domain names (including `localhost`) pass here and are
/// vetted by [`GuardedResolver`] when the request resolves them; reqwest never resolves IP literals.
pub fn check_url(url: &Url, policy: AddressPolicy) -> Result<(), BlockedAddress> {
    // A URL without a host cannot be sent by reqwest at all. The parser has already turned every IPv4
    // spelling (`2130706433`, `0x7f.1`) into dotted form, so a host that does not parse as an IP is a name.
    let Some(host) = url.host_str() else { return Ok(()) };
    match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        Ok(ip) => check_ip_for_host(host, ip, policy),
        Err(_) => Ok(()),
    }
}

/// A reqwest DNS resolver that returns only vetted addresses.
#[derive(Debug)]
pub struct GuardedResolver {
    policy: AddressPolicy,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = tokio::net::lookup_host((host.as_str(), 0)).await.map(Iterator::collect::<Vec<_>>);
            let resolved = match lookup {
                Ok(addrs) => addrs,
                Err(source) => return Err(DnsError { host, source }.into()),
            };
            if resolved.is_empty() {
                let source = io::Error::new(io::ErrorKind::NotFound, "no addresses returned");
                return Err(DnsError { host, source }.into());
            }
            let vetted = vet(&host, resolved, policy)?;
            Ok(Box::new(vetted.into_iter()) as Addrs)
        })
    }
}

/// Passes a DNS answer only if every address in it is allowed: an answer that mixes a public address with
/// a private one is a DNS trick, not a destination.
fn vet(host: &str, addrs: Vec<SocketAddr>, policy: AddressPolicy) -> Result<Vec<SocketAddr>, BlockedAddress> {
    for addr in &addrs {
        check_ip_for_host(host, addr.ip(), policy)?;
    }
    Ok(addrs)
}

pub use crate::delivery::ErrorClass;

/// The errors beneath `err`, outermost first.
fn sources<'a>(err: &'a reqwest::Error) -> impl Iterator<Item = &'a (dyn StdError + 'static)> + Clone {
    std::iter::successors(err.source(), |&e| e.source())
}

fn io_kind(err: &(dyn StdError + 'static)) -> Option<io::ErrorKind> {
    err.downcast_ref::<io::Error>().map(io::Error::kind)
}

/// Words that mark a TLS failure. The last four are rustls's own phrasings for a peer that does not speak
/// TLS properly, which say none of the first three.
const TLS_WORDS: [&str; 7] =
    ["certificate", "tls", "handshake", "corrupt message", "fatal alert", "peer is incompatible", "peer misbehaved"];

/// rustls errors reach us wrapped in `io::Error`s of no telling kind (and rustls is not our dependency to
/// downcast to), so they are recognised by their words. Only the sources are read: the outer error's text
/// holds the URL, whose host may well contain "tls".
fn looks_like_tls(err: &(dyn StdError + 'static)) -> bool {
    let text = err.to_string().to_ascii_lowercase();
    TLS_WORDS.iter().any(|word| text.contains(word))
}

/// Classifies a failed send by the first matching cause, most specific first.
pub fn classify(err: &reqwest::Error) -> ErrorClass {
    let chain = sources(err);
    if chain.clone().any(|e| e.is::<BlockedAddress>()) {
        ErrorClass::BlockedAddress
    } else if chain.clone().any(|e| e.is::<DnsError>()) {
        ErrorClass::Dns
    } else if err.is_timeout() || chain.clone().any(|e| io_kind(e) == Some(io::ErrorKind::TimedOut)) {
        ErrorClass::Timeout
    } else if chain.clone().any(|e| io_kind(e) == Some(io::ErrorKind::ConnectionRefused)) {
        ErrorClass::ConnectionRefused
    } else if chain.clone().any(looks_like_tls) {
        ErrorClass::Tls
    } else if err.is_redirect() {
        ErrorClass::Redirect
    } else if err.is_connect() {
        ErrorClass::Connection
    } else {
        ErrorClass::Other
    }
}

const DESCRIPTION_MAX_CHARS: usize = 500;

/// The whole cause chain of a failed send, joined by ": ", at most 500 characters, with the URL cut down to
/// its origin. The path goes too, not only userinfo and query: webhook URLs (Slack, Discord, Teams) carry
/// their secret in the path.
pub fn describe(err: &reqwest::Error) -> String {
    let redact = |text: String| match err.url() {
        Some(url) => text.replace(url.as_str(), &origin(url)),
        None => text,
    };
    let mut description = redact(err.to_string());
    for source in sources(err) {
        description.push_str(": ");
        description.push_str(&redact(source.to_string()));
    }
    match description.char_indices().nth(DESCRIPTION_MAX_CHARS) {
        Some((end, _)) => description[..end].to_owned(),
        None => description,
    }
}

/// `scheme://host[:port]`, nothing the tenant might have hidden a secret in.
fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const STRICT: AddressPolicy = AddressPolicy { allow_loopback: false };
    const LOOPBACK_ALLOWED: AddressPolicy = AddressPolicy { allow_loopback: true };

    fn reason(ip: &str, policy: AddressPolicy) -> Option<&'static str> {
        check_ip(ip.parse().unwrap(), policy).err().map(|blocked| blocked.reason)
    }

    #[test]
    fn refuses_every_non_public_range() {
        let cases = [
            ("127.0.0.1", LOOPBACK),
            ("127.255.255.254", LOOPBACK),
            ("::1", LOOPBACK),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.0.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("254.255.255.255", "reserved"),
            ("fc00::1", "unique local"),
            ("fdff::1", "unique local"),
            ("fec0::1", "site-local"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", LOOPBACK),
            ("::ffff:169.254.169.254", "metadata"),
            ("::10.0.0.1", "private"),
            ("::169.254.169.254", "metadata"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("2002:a00:1::", "private"),
            ("2002:7f00:1::1", LOOPBACK),
            ("2002:a9fe:a9fe::", "metadata"),
        ];
        for (ip, expected) in cases {
            assert_eq!(reason(ip, STRICT), Some(expected), "{ip}");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let cases = [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "192.0.1.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ];
        for ip in cases {
            assert_eq!(reason(ip, STRICT), None, "{ip}");
        }
    }

    #[test]
    fn allow_loopback_permits_only_loopback() {
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(reason(ip, LOOPBACK_ALLOWED), None, "{ip}");
        }
        assert_eq!(reason("10.0.0.1", LOOPBACK_ALLOWED), Some("private"));
        assert_eq!(reason("169.254.169.254", LOOPBACK_ALLOWED), Some("metadata"));
        assert_eq!(reason("0.0.0.0", LOOPBACK_ALLOWED), Some("unspecified"));
    }

    #[test]
    fn message_names_the_setting_only_for_loopback() {
        let loopback = check_ip("127.0.0.1".parse().unwrap(), STRICT).unwrap_err().to_string();
        assert_eq!(
            loopback,
            "refusing to send to 127.0.0.1 (127.0.0.1): loopback address; \
             set DELIVERY_ALLOW_LOOPBACK=true to allow loopback in development"
        );
        let private = check_ip("10.0.0.1".parse().unwrap(), STRICT).unwrap_err().to_string();
        assert_eq!(private, "refusing to send to 10.0.0.1 (10.0.0.1): private address");
    }

    #[test]
    fn check_url_vets_ip_literals_and_leaves_names_to_the_resolver() {
        let blocked = [
            ("http://127.0.0.1:8080/hook", LOOPBACK),
            ("http://[::1]/", LOOPBACK),
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("https://10.1.2.3/", "private"),
            ("http://[::ffff:10.0.0.1]/", "private"),
            ("http://[fd00:ec2::254]/", "metadata"),
            // WHATWG parsing turns these spellings into the IPv4 literal 127.0.0.1.
            ("http://2130706433/", LOOPBACK),
            ("http://0x7f.1/", LOOPBACK),
        ];
        for (url, expected) in blocked {
            let err = check_url(&Url::parse(url).unwrap(), STRICT).unwrap_err();
            assert_eq!(err.reason, expected, "{url}");
        }
        let err = check_url(&Url::parse("http://[::1]:9000/").unwrap(), STRICT).unwrap_err();
        assert_eq!(err.host, "[::1]");

        let passed =
            ["https://93.184.216.34/", "https://[2606:4700::1111]/", "https://example.com/", "http://localhost/"];
        for url in passed {
            assert_eq!(check_url(&Url::parse(url).unwrap(), STRICT), Ok(()), "{url}");
        }
        assert_eq!(check_url(&Url::parse("http://127.0.0.1/").unwrap(), LOOPBACK_ALLOWED), Ok(()));
    }

    #[test]
    fn vet_refuses_an_answer_with_any_blocked_address() {
        let public: SocketAddr = "93.184.216.34:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert_eq!(vet("example.com", vec![public], STRICT), Ok(vec![public]));
        let err = vet("rebind.example", vec![public, private], STRICT).unwrap_err();
        assert_eq!((err.host.as_str(), err.ip, err.reason), ("rebind.example", private.ip(), "private"));
    }

    #[test]
    fn error_classes_have_stable_labels_and_retry_rules() {
        use ErrorClass::*;
        let cases = [
            (Timeout, "timeout", true),
            (ConnectionRefused, "connection_refused", true),
            (Dns, "dns", true),
            (Tls, "tls", true),
            (BlockedAddress, "blocked_address", false),
            (Connection, "connection", true),
            (Redirect, "redirect", false),
            (Other, "other", true),
        ];
        for (class, label, retryable) in cases {
            assert_eq!((class.as_str(), class.retryable()), (label, retryable), "{class:?}");
        }
    }

    proptest! {
        #[test]
        fn all_of_ten_slash_eight_is_blocked(bits in 0u32..(1 << 24)) {
            let ip = Ipv4Addr::from((10 << 24) | bits);
            prop_assert_eq!(reason(&ip.to_string(), LOOPBACK_ALLOWED), Some("private"));
        }

        #[test]
        fn mapped_form_of_a_blocked_v4_is_blocked(raw in any::<u32>(), allow_loopback in any::<bool>()) {
            let policy = AddressPolicy { allow_loopback };
            let v4 = Ipv4Addr::from(raw);
            let direct = check_ip(IpAddr::V4(v4), policy).err().map(|blocked| blocked.reason);
            let mapped = check_ip(IpAddr::V6(v4.to_ipv6_mapped()), policy).err().map(|blocked| blocked.reason);
            prop_assert_eq!(direct, mapped);
        }
    }

    fn client(policy: AddressPolicy) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(policy)))
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn resolver_refuses_localhost_before_connecting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();

        let err = client(STRICT).get(format!("http://localhost:{port}/")).send().await.unwrap_err();

        assert_eq!(classify(&err), ErrorClass::BlockedAddress, "{}", describe(&err));
        assert!(describe(&err).contains("loopback address"), "{}", describe(&err));
        // The kernel completes handshakes into the backlog by itself, so an empty backlog means no connect.
        let accepted = listener.accept();
        assert_eq!(accepted.map(|_| ()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[tokio::test]
    async fn resolver_returns_loopback_when_allowed() {
        let resolved: Vec<_> =
            GuardedResolver::new(LOOPBACK_ALLOWED).resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!resolved.is_empty() && resolved.iter().all(|addr| addr.ip().is_loopback()), "{resolved:?}");
    }

    #[tokio::test]
    async fn request_reaches_localhost_when_loopback_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let response = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            stream.write_all(response).await.unwrap();
        });

        let response = client(LOOPBACK_ALLOWED).get(format!("http://localhost:{port}/")).send().await.unwrap();

        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn closed_port_is_connection_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

        let err = client(LOOPBACK_ALLOWED).get(format!("http://localhost:{port}/")).send().await.unwrap_err();

        assert_eq!(classify(&err), ErrorClass::ConnectionRefused, "{}", describe(&err));
    }

    #[tokio::test]
    async fn silent_destination_is_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(LOOPBACK_ALLOWED)))
            .no_proxy()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();

        let err = client.get(format!("http://127.0.0.1:{port}/")).send().await.unwrap_err();

        assert_eq!(classify(&err), ErrorClass::Timeout, "{}", describe(&err));
    }

    #[tokio::test]
    async fn plain_http_answer_to_https_is_tls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            // Held open until the client gives up, so the client sees the bytes rather than a reset.
            let _ = stream.read(&mut [0; 1024]).await;
        });

        let err = client(LOOPBACK_ALLOWED).get(format!("https://127.0.0.1:{port}/")).send().await.unwrap_err();

        assert_eq!(classify(&err), ErrorClass::Tls, "{}", describe(&err));
    }

    // `.invalid` is reserved (RFC 6761) and fails fast here, without network access.
    #[tokio::test]
    async fn unresolvable_host_is_dns() {
        let err = client(STRICT).get("http://nonexistent.invalid/").send().await.unwrap_err();

        assert_eq!(classify(&err), ErrorClass::Dns, "{}", describe(&err));
        assert!(describe(&err).contains("could not resolve nonexistent.invalid"), "{}", describe(&err));
    }

    #[tokio::test]
    async fn description_keeps_only_the_origin_of_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://user:hunter2@127.0.0.1:{port}/services/T0/B0/pathsecret?token=querysecret");

        let err = client(LOOPBACK_ALLOWED).post(url).send().await.unwrap_err();

        let description = describe(&err);
        assert!(description.contains(&format!("http://127.0.0.1:{port}")), "{description}");
        for secret in ["hunter2", "user", "pathsecret", "querysecret"] {
            assert!(!description.contains(secret), "{secret} leaked: {description}");
        }
        assert!(description.chars().count() <= DESCRIPTION_MAX_CHARS);
    }
}
