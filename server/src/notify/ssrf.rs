//! The outbound-URL guard against server-side request forgery.
//!
//! Every URL a user can set (webhook targets, playbook webhook steps) passes two checks:
//!
//! 1. [`check_url`], pure: `http` or `https` only, no credentials in the URL, a host that is not
//!    an internal name (`localhost`, `*.internal`, single-label names…) nor a forbidden IP
//!    literal in any notation the URL standard accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`,
//!    `[::ffff:127.0.0.1]` all parse to 127.0.0.1), and — when an allowlist is configured — a
//!    host on it.
//! 2. [`resolve_checked`], at delivery time: resolves the host once and refuses if *any*
//!    resolved address is forbidden ([`is_forbidden_ip`]), then returns one checked address.
//!    The caller must connect to that address and nothing else — with reqwest,
//!    `ClientBuilder::resolve(host, addr)` keeps the host for TLS and the `Host` header while
//!    pinning the connection — and must not follow redirects (`redirect::Policy::none()`), since
//!    a redirect would bypass the guard. Resolving once closes the DNS-rebinding gap between
//!    checking and connecting.
//!
//! # The allowlist (`MEDIC_ALLOWED_WEBHOOK_HOSTS`)
//!
//! The allowlist **restricts**: when it is not empty, only the listed hosts may be called. It
//! never grants access to a forbidden address — an allowlisted name that resolves to a private
//! address is still refused — because the guard protects the network Medic runs in, which an
//! operator's list of partner hosts says nothing about. Entries are host names or IP literals,
//! compared case-insensitively; `*.example.com` matches every subdomain of `example.com` (but
//! not `example.com` itself). Ports are not part of an entry.
//!
//! Every refusal is the same [`SsrfError`] to the user ("Invalid webhook URL"); the variant,
//! for logs, says which rule refused it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// The only message a refused URL ever shows to a user.
pub const INVALID_WEBHOOK_URL: &str = "Invalid webhook URL";

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Why a URL was refused. Every variant displays as [`INVALID_WEBHOOK_URL`]; use
/// [`SsrfError::reason`] in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("Invalid webhook URL")]
    Malformed,
    #[error("Invalid webhook URL")]
    UnsupportedScheme,
    #[error("Invalid webhook URL")]
    Credentials,
    #[error("Invalid webhook URL")]
    InternalHostname,
    #[error("Invalid webhook URL")]
    NotAllowlisted,
    #[error("Invalid webhook URL")]
    ForbiddenAddress,
    #[error("Invalid webhook URL")]
    Unresolvable,
}

impl SsrfError {
    /// What refused the URL, for logs only.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed URL",
            Self::UnsupportedScheme => "scheme is not http or https",
            Self::Credentials => "URL carries credentials",
            Self::InternalHostname => "internal host name",
            Self::NotAllowlisted => "host not in MEDIC_ALLOWED_WEBHOOK_HOSTS",
            Self::ForbiddenAddress => "forbidden address",
            Self::Unresolvable => "host does not resolve",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// The host of a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A lowercase ASCII (punycode) name without a trailing dot.
    Domain(String),
    /// An IP literal, already checked.
    Ip(IpAddr),
}

/// A URL that passed [`check_url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTarget {
    url: Url,
    scheme: Scheme,
    host: TargetHost,
    port: u16,
}

impl ParsedTarget {
    /// The normalised URL to request.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn host(&self) -> &TargetHost {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Splits `MEDIC_ALLOWED_WEBHOOK_HOSTS` (comma-separated) into entries; blanks are dropped.
pub fn parse_allowlist(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Validates a user-supplied outbound URL without touching the network.
pub fn check_url(raw: &str, allowlist: &[String]) -> Result<ParsedTarget, SsrfError> {
    check(raw, allowlist, true)
}

/// [`check_url`] for a deployment that opted into private targets
/// (`MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS`): the same shape checks (`http`/`https`, no
/// credentials, a host and a port, the allowlist when one is set) but internal names and
/// private, loopback or link-local addresses are accepted. Meant for receivers on a private
/// network and for local testing only.
pub fn check_url_allowing_private(
    raw: &str,
    allowlist: &[String],
) -> Result<ParsedTarget, SsrfError> {
    check(raw, allowlist, false)
}

fn check(raw: &str, allowlist: &[String], guard_network: bool) -> Result<ParsedTarget, SsrfError> {
    if raw.len() > MAX_URL_LEN {
        return Err(SsrfError::Malformed);
    }
    let raw = raw.trim();
    // The URL standard reads `\` as `/` in http(s) URLs, most other clients do not:
    // `http://example.com\@127.0.0.1/` is example.com here but 127.0.0.1 to curl. A URL that
    // clients read differently is refused, as are control characters the parser would drop.
    if raw.contains('\\') || raw.chars().any(char::is_control) {
        return Err(SsrfError::Malformed);
    }
    let mut url = Url::parse(raw).map_err(|_| SsrfError::Malformed)?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(SsrfError::UnsupportedScheme),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    let host = match url.host().ok_or(SsrfError::Malformed)? {
        Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if guard_network && is_internal_name(&d) {
                return Err(SsrfError::InternalHostname);
            }
            TargetHost::Domain(d)
        }
        Host::Ipv4(v4) => TargetHost::Ip(IpAddr::V4(v4)),
        Host::Ipv6(v6) => TargetHost::Ip(IpAddr::V6(v6)),
    };
    if let TargetHost::Ip(ip) = host
        && guard_network
        && is_forbidden_ip(ip)
    {
        return Err(SsrfError::ForbiddenAddress);
    }
    let port = url
        .port_or_known_default()
        .filter(|p| *p != 0)
        .ok_or(SsrfError::Malformed)?;
    if !allowlist.is_empty() && !allowlist.iter().any(|e| allowlist_matches(e, &host)) {
        return Err(SsrfError::NotAllowlisted);
    }
    // The normalised form is what is stored, shown and requested: the host as it was checked
    // (lowercase, punycode, no trailing dot), no fragment, a default port left out.
    if let TargetHost::Domain(d) = &host {
        url.set_host(Some(d)).map_err(|_| SsrfError::Malformed)?;
    }
    url.set_fragment(None);
    Ok(ParsedTarget {
        url,
        scheme,
        host,
        port,
    })
}

/// Names that only mean something inside a network: `localhost` and its subdomains, private
/// suffixes (`.internal`, `.local`, `.localdomain`, `.home.arpa`, `.lan`, `.intranet`, `.corp`)
/// and single-label names (`redis`, `metadata`), which resolve through search domains.
fn is_internal_name(domain: &str) -> bool {
    const SUFFIXES: [&str; 8] = [
        "localhost",
        "internal",
        "local",
        "localdomain",
        "home.arpa",
        "lan",
        "intranet",
        "corp",
    ];
    !domain.contains('.')
        || SUFFIXES
            .iter()
            .any(|s| domain == *s || domain.strip_suffix(s).is_some_and(|p| p.ends_with('.')))
}

fn allowlist_matches(entry: &str, host: &TargetHost) -> bool {
    let entry = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match entry.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, entry.as_str()),
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    match (host, bare.parse::<IpAddr>()) {
        (TargetHost::Ip(ip), Ok(allowed)) => !wildcard && *ip == allowed,
        (TargetHost::Ip(_), Err(_)) | (TargetHost::Domain(_), Ok(_)) => false,
        (TargetHost::Domain(d), Err(_)) => {
            // Internationalised entries compare in their punycode form, as the URL's host does.
            let Ok(Host::Domain(name)) = Host::parse(name) else {
                return false;
            };
            if wildcard {
                d.strip_suffix(name.as_str())
                    .is_some_and(|p| p.len() > 1 && p.ends_with('.'))
            } else {
                *d == name
            }
        }
    }
}

/// IPv4 networks Medic never connects to on a user's behalf.
const FORBIDDEN_V4: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network"
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata (169.254.169.254)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast 255.255.255.255
];

/// IPv6 networks inside global unicast (2000::/3) Medic never connects to. Everything outside
/// 2000::/3 — unspecified, loopback, IPv4-compatible, unique local (fc00::/7, including AWS's
/// fd00:ec2::254 metadata address), link-local, site-local, multicast, discard — is refused
/// as well, after the forms that embed an IPv4 address have been unwrapped.
const FORBIDDEN_V6_GLOBAL: [(Ipv6Addr, u8); 4] = [
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // segment routing
];

fn in_v4(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

fn in_v6(ip: Ipv6Addr, (net, prefix): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped (`::ffff:a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let bits = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(bits as u32);
    if in_v6(ip, (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)) {
        return Some(low32);
    }
    if in_v6(ip, (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16)) {
        return Some(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    None
}

/// Whether Medic must refuse to connect to `ip` on a user's behalf: loopback, private,
/// link-local, carrier-grade NAT, multicast, reserved, documentation and metadata addresses,
/// in IPv4 or any IPv6 form that embeds one.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => FORBIDDEN_V4.iter().any(|n| in_v4(v4, *n)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => is_forbidden_ip(IpAddr::V4(v4)),
            None => {
                let global_unicast = in_v6(v6, (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3));
                !global_unicast || FORBIDDEN_V6_GLOBAL.iter().any(|n| in_v6(v6, *n))
            }
        },
    }
}

/// Picks the address to connect to from a resolution: refuses when there is none or when any
/// of them is forbidden (a name that mixes public and private addresses is refused outright),
/// otherwise returns the first.
pub fn pick_address(addrs: impl IntoIterator<Item = SocketAddr>) -> Result<SocketAddr, SsrfError> {
    let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
    if addrs.iter().any(|a| is_forbidden_ip(a.ip())) {
        return Err(SsrfError::ForbiddenAddress);
    }
    addrs.first().copied().ok_or(SsrfError::Unresolvable)
}

/// Resolves a checked target once and returns the one address to connect to (see the module
/// documentation for how to use it without re-resolving).
pub async fn resolve_checked(target: &ParsedTarget) -> Result<SocketAddr, SsrfError> {
    match &target.host {
        TargetHost::Ip(ip) => pick_address([SocketAddr::new(*ip, target.port)]),
        TargetHost::Domain(name) => {
            let addrs = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|_| SsrfError::Unresolvable)?;
            pick_address(addrs)
        }
    }
}

/// Resolves a target once *without* the address check, for targets accepted by
/// [`check_url_allowing_private`]; the caller still pins the connection to the returned address.
pub async fn resolve_unchecked(target: &ParsedTarget) -> Result<SocketAddr, SsrfError> {
    match &target.host {
        TargetHost::Ip(ip) => Ok(SocketAddr::new(*ip, target.port)),
        TargetHost::Domain(name) => tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|_| SsrfError::Unresolvable)?
            .next()
            .ok_or(SsrfError::Unresolvable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    #[track_caller]
    fn refused(url: &str, want: SsrfError) {
        assert_eq!(
            check_url(url, &[]).map(|t| t.url().to_string()),
            Err(want),
            "{url}"
        );
    }

    #[track_caller]
    fn accepted(url: &str) -> ParsedTarget {
        check_url(url, &[]).unwrap_or_else(|e| panic!("{url} refused: {}", e.reason()))
    }

    #[test]
    fn every_forbidden_ipv4_range_and_its_edges() {
        // (first, last, just outside) for each range; the outside address may be another range's.
        let ranges = [
            ("0.0.0.0", "0.255.255.255", None),
            ("10.0.0.0", "10.255.255.255", Some("11.0.0.0")),
            ("100.64.0.0", "100.127.255.255", Some("100.128.0.0")),
            ("127.0.0.0", "127.255.255.255", Some("128.0.0.0")),
            ("169.254.0.0", "169.254.255.255", Some("169.255.0.0")),
            ("172.16.0.0", "172.31.255.255", Some("172.32.0.0")),
            ("192.0.0.0", "192.0.0.255", Some("192.0.1.0")),
            ("192.0.2.0", "192.0.2.255", Some("192.0.3.0")),
            ("192.88.99.0", "192.88.99.255", Some("192.88.100.0")),
            ("192.168.0.0", "192.168.255.255", Some("192.169.0.0")),
            ("198.18.0.0", "198.19.255.255", Some("198.20.0.0")),
            ("198.51.100.0", "198.51.100.255", Some("198.51.101.0")),
            ("203.0.113.0", "203.0.113.255", Some("203.0.114.0")),
            ("224.0.0.0", "239.255.255.255", Some("223.255.255.255")),
            ("240.0.0.0", "255.255.255.255", None),
        ];
        for (first, last, outside) in ranges {
            assert!(is_forbidden_ip(ip(first)), "{first}");
            assert!(is_forbidden_ip(ip(last)), "{last}");
            if let Some(o) = outside {
                assert!(!is_forbidden_ip(ip(o)), "{o}");
            }
        }
        for below in [
            "9.255.255.255",
            "100.63.255.255",
            "126.255.255.255",
            "172.15.255.255",
        ] {
            assert!(!is_forbidden_ip(ip(below)), "{below}");
        }
        for named in ["169.254.169.254", "127.0.0.1", "255.255.255.255", "0.0.0.0"] {
            assert!(is_forbidden_ip(ip(named)), "{named}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "52.94.236.248", "151.101.1.69"] {
            assert!(!is_forbidden_ip(ip(public)), "{public}");
        }
    }

    #[test]
    fn forbidden_ipv6_ranges() {
        for bad in [
            "::",
            "::1",
            "::7f00:1",               // IPv4-compatible (deprecated)
            "fc00::1",                // unique local
            "fdff:ffff::1",           // unique local
            "fd00:ec2::254",          // AWS instance metadata
            "fe80::1",                // link-local
            "febf:ffff::1",           // link-local, last block
            "fec0::1",                // site-local (deprecated)
            "ff02::1",                // multicast
            "ff05::1:3",              // multicast
            "100::1",                 // discard
            "2001:db8::1",            // documentation
            "2001:db8:ffff::1",       // documentation
            "3fff::1",                // documentation
            "2001::1",                // Teredo
            "2001:0:4136:e378::1",    // Teredo
            "2001:10::1",             // ORCHID
            "5f00::1",                // segment routing
            "64:ff9b:1::1",           // local-use NAT64
            "::ffff:127.0.0.1",       // mapped loopback
            "::ffff:10.1.2.3",        // mapped private
            "::ffff:169.254.169.254", // mapped metadata
            "64:ff9b::127.0.0.1",     // NAT64 loopback
            "64:ff9b::a9fe:a9fe",     // NAT64 metadata
            "64:ff9b::c0a8:1",        // NAT64 192.168.0.1
            "2002:7f00:1::",          // 6to4 of 127.0.0.1
            "2002:a9fe:a9fe::1",      // 6to4 of 169.254.169.254
            "2002:c0a8:101:1::1",     // 6to4 of 192.168.1.1
        ] {
            assert!(is_forbidden_ip(ip(bad)), "{bad}");
        }
        for good in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "2001:200::1",      // just past 2001::/23
            "2001:db9::1",      // just past 2001:db8::/32
            "::ffff:8.8.8.8",   // mapped public
            "64:ff9b::808:808", // NAT64 8.8.8.8
            "2002:808:808::1",  // 6to4 of 8.8.8.8
        ] {
            assert!(!is_forbidden_ip(ip(good)), "{good}");
        }
    }

    #[test]
    fn ordinary_urls_are_accepted_and_normalised() {
        let t = accepted("https://hooks.slack.com/services/T0/B0/x");
        assert_eq!(t.scheme(), Scheme::Https);
        assert_eq!(t.host(), &TargetHost::Domain("hooks.slack.com".into()));
        assert_eq!(t.port(), 443);
        let t = accepted("http://Example.COM.:8080/hook?a=1");
        assert_eq!(t.scheme(), Scheme::Http);
        assert_eq!(t.host(), &TargetHost::Domain("example.com".into()));
        assert_eq!(t.port(), 8080);
        let t = accepted("  https://8.8.8.8/x  ");
        assert_eq!(t.host(), &TargetHost::Ip(ip("8.8.8.8")));
        let t = accepted("https://[2606:4700:4700::1111]:8443/");
        assert_eq!(t.host(), &TargetHost::Ip(ip("2606:4700:4700::1111")));
        assert_eq!(t.port(), 8443);
        // Internationalised names are checked in punycode.
        let t = accepted("https://bücher.example/");
        assert_eq!(
            t.host(),
            &TargetHost::Domain("xn--bcher-kva.example".into())
        );
    }

    #[test]
    fn only_http_and_https() {
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "javascript:alert(1)",
            "data:text/plain,hi",
            "ws://example.com/",
            "dict://example.com:11211/",
        ] {
            refused(url, SsrfError::UnsupportedScheme);
        }
        for url in [
            "",
            "example.com",
            "//example.com",
            "http://",
            "http://exa mple.com/",
            "https://example.com:0/",
            "http://[::1/",
        ] {
            refused(url, SsrfError::Malformed);
        }
        refused(
            &format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)),
            SsrfError::Malformed,
        );
    }

    #[test]
    fn urls_that_clients_read_differently_are_refused() {
        for url in [
            "http://example.com\\@127.0.0.1:18099/",
            "http://a.example.com\\@evil.test/",
            "https://example.com/a\\b",
            "https://exa\tmple.com/",
            "https://example.com/a\nb",
        ] {
            refused(url, SsrfError::Malformed);
        }
    }

    #[test]
    fn the_normalised_url_is_the_checked_one() {
        let t = accepted(" HTTPS://Hooks.Example.COM.:443/a/../medic?x=1#frag ");
        assert_eq!(t.url().as_str(), "https://hooks.example.com/medic?x=1");
        let t = accepted("https://bücher.example/");
        assert_eq!(t.url().as_str(), "https://xn--bcher-kva.example/");
    }

    #[test]
    fn credentials_are_refused() {
        refused("https://user:secret@example.com/", SsrfError::Credentials);
        refused("https://user@example.com/", SsrfError::Credentials);
        refused("https://:secret@example.com/", SsrfError::Credentials);
    }

    #[test]
    fn internal_names_are_refused() {
        for url in [
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://printer.local/",
            "http://router.lan/",
            "http://nas.home.arpa/",
            "http://redis:6379/",
            "http://metadata/",
            "http://medic-postgres/",
        ] {
            refused(url, SsrfError::InternalHostname);
        }
        // Lookalikes that are ordinary public names.
        for url in [
            "https://localhost.example.com/",
            "https://notlocal.dev/",
            "https://corporate.com/",
        ] {
            accepted(url);
        }
    }

    #[test]
    fn forbidden_ip_literals_in_every_notation() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1:9090/metrics",
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",      // decimal
            "http://0177.0.0.1/",      // octal
            "http://0x7f.0.0.1/",      // hex
            "http://0x7f000001/",      // hex, one number
            "http://127.1/",           // short form
            "http://017700000001/",    // octal, one number
            "http://%31%32%37.0.0.1/", // percent-encoded
            "http://１２７.０.０.１/", // full-width digits
            "http://0/",
            "http://0.0.0.0:8080/",
            "http://10.0.0.5/",
            "http://100.100.100.200/", // CGNAT (Alibaba metadata)
            "http://172.17.0.1/",
            "http://192.168.1.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::169.254.169.254]/",
            "http://[2002:7f00:1::1]/",
            "http://[fd00:ec2::254]/latest/meta-data/",
        ] {
            refused(url, SsrfError::ForbiddenAddress);
        }
        // Zone ids are not valid in URLs at all.
        refused("http://[fe80::1%25eth0]/", SsrfError::Malformed);
    }

    #[test]
    fn every_refusal_reads_the_same() {
        for e in [
            SsrfError::Malformed,
            SsrfError::UnsupportedScheme,
            SsrfError::Credentials,
            SsrfError::InternalHostname,
            SsrfError::NotAllowlisted,
            SsrfError::ForbiddenAddress,
            SsrfError::Unresolvable,
        ] {
            assert_eq!(e.to_string(), INVALID_WEBHOOK_URL);
            assert!(!e.reason().is_empty());
        }
    }

    #[test]
    fn allowlist_restricts_to_listed_hosts() {
        let list = parse_allowlist(
            " hooks.slack.com, ,*.example.org,8.8.8.8,[2606:4700::1111],BÜCHER.example ",
        );
        assert_eq!(list.len(), 5);
        let ok = |u: &str| check_url(u, &list).map(|t| t.port());
        assert!(ok("https://hooks.slack.com/services/x").is_ok());
        assert!(ok("https://HOOKS.slack.com./x").is_ok());
        assert!(ok("https://a.example.org/").is_ok());
        assert!(ok("https://deep.a.example.org/").is_ok());
        assert!(ok("https://8.8.8.8/").is_ok());
        assert!(ok("https://[2606:4700::1111]/").is_ok());
        assert!(ok("https://bücher.example/").is_ok());
        for not_listed in [
            "https://example.org/", // the wildcard needs a subdomain
            "https://badexample.org/",
            "https://hooks.slack.com.evil.com/",
            "https://evilhooks.slack.com/",
            "https://8.8.4.4/",
            "https://attacker.net/",
        ] {
            assert_eq!(
                ok(not_listed),
                Err(SsrfError::NotAllowlisted),
                "{not_listed}"
            );
        }
        // Listing a host never opens a forbidden one.
        let list = parse_allowlist("localhost,127.0.0.1,169.254.169.254");
        assert_eq!(
            check_url("http://localhost/", &list),
            Err(SsrfError::InternalHostname)
        );
        assert_eq!(
            check_url("http://127.0.0.1/", &list),
            Err(SsrfError::ForbiddenAddress)
        );
        assert_eq!(
            check_url("http://169.254.169.254/", &list),
            Err(SsrfError::ForbiddenAddress)
        );
        // An empty list allows every public host.
        assert!(check_url("https://attacker.net/", &parse_allowlist(" , ")).is_ok());
    }

    #[test]
    fn private_targets_keep_the_shape_checks() {
        let ok = |u: &str, list: &[String]| check_url_allowing_private(u, list).map(|t| t.port());
        assert_eq!(ok("http://127.0.0.1:9000/hook", &[]), Ok(9000));
        assert_eq!(ok("http://localhost/hook", &[]), Ok(80));
        assert_eq!(ok("https://10.1.2.3/", &[]), Ok(443));
        assert_eq!(ok("http://receiver:8080/", &[]), Ok(8080));
        assert_eq!(
            ok("ftp://10.1.2.3/", &[]),
            Err(SsrfError::UnsupportedScheme)
        );
        assert_eq!(
            ok("http://user:pw@10.1.2.3/", &[]),
            Err(SsrfError::Credentials)
        );
        assert_eq!(ok("not a url", &[]), Err(SsrfError::Malformed));
        let list = parse_allowlist("hooks.internal");
        assert!(ok("http://hooks.internal/", &list).is_ok());
        assert_eq!(
            ok("http://10.1.2.3/", &list),
            Err(SsrfError::NotAllowlisted)
        );
    }

    #[test]
    fn picking_an_address_refuses_any_forbidden_answer() {
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(
            pick_address([sa("8.8.8.8:443"), sa("[2606:4700::1111]:443")]),
            Ok(sa("8.8.8.8:443"))
        );
        assert_eq!(
            pick_address([sa("8.8.8.8:443"), sa("10.0.0.1:443")]),
            Err(SsrfError::ForbiddenAddress)
        );
        assert_eq!(
            pick_address([sa("[::ffff:127.0.0.1]:80")]),
            Err(SsrfError::ForbiddenAddress)
        );
        assert_eq!(pick_address([]), Err(SsrfError::Unresolvable));
    }

    #[tokio::test]
    async fn resolving_checks_what_the_name_points_to() {
        // An IP literal needs no lookup.
        let t = accepted("https://8.8.8.8:8443/");
        assert_eq!(
            resolve_checked(&t).await,
            Ok("8.8.8.8:8443".parse().unwrap())
        );
        // A name that passed the name checks but resolves to loopback (as a rebinding or a
        // `127.0.0.1.nip.io`-style name would) is refused after resolution.
        let sneaky = ParsedTarget {
            host: TargetHost::Domain("localhost".into()),
            ..accepted("https://example.com/")
        };
        assert_eq!(
            resolve_checked(&sneaky).await,
            Err(SsrfError::ForbiddenAddress)
        );
    }
}
