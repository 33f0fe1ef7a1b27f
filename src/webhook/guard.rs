//! The SSRF guard for user-supplied webhook URLs.
//!
//! A webhook URL is chosen by a user, and the server then makes requests to it: without a
//! guard, a URL such as `http://169.254.169.254/` (cloud metadata) or
//! `http://localhost:8080/admin` would make the server reach its own private network.
//! The guard refuses every internal address (see [`is_internal`]) unless a
//! [`TargetPolicy`] explicitly allows its network, in three places:
//!
//! - [`check_url`]: when a URL is registered, its syntax, scheme and credentials, and an
//!   IP-literal host (which reqwest connects to without resolving it).
//! - [`check_resolved`]: at registration too, resolves a host name and refuses it when it
//!   resolves only to refused addresses, so that users learn early.
//! - [`GuardedResolver`], installed by [`client`]: at every connection, resolves the host
//!   name and hands reqwest only permitted addresses. reqwest connects only to what the
//!   resolver returns, so the address checked is the address connected to (no window for
//!   DNS rebinding between a check and the connection). [`client`] also follows no
//!   redirects and ignores proxy settings, either of which would bypass the check.
//!
//! IP-literal hosts never reach the resolver, so every URL sent through [`client`] must
//! first have passed [`check_url`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a webhook target was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The text is not an absolute URL.
    #[error("invalid webhook URL: {0}")]
    InvalidUrl(String),
    /// The scheme is not `http` or `https`.
    #[error("unsupported webhook URL scheme `{0}`: only http and https are allowed")]
    UnsupportedScheme(String),
    /// The URL carries a user name or password.
    #[error("webhook URLs must not contain credentials (user:password@)")]
    Credentials,
    /// The URL has no host.
    #[error("the webhook URL has no host")]
    MissingHost,
    /// The host is (or resolved to) an address the policy refuses.
    #[error("webhook host `{host}` is the internal address {ip}, which webhooks may not target")]
    InternalAddress {
        /// The host as written in the URL.
        host: String,
        /// The refused address.
        ip: IpAddr,
    },
    /// The host name resolves, but only to addresses the policy refuses.
    #[error(
        "webhook host `{host}` resolves only to internal addresses ({}), which webhooks may not target",
        list_ips(.ips)
    )]
    OnlyInternalAddresses {
        /// The host name.
        host: String,
        /// Every address it resolved to.
        ips: Vec<IpAddr>,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve webhook host `{host}`: {reason}")]
    Unresolvable {
        /// The host name.
        host: String,
        /// What the resolver reported.
        reason: String,
    },
    /// The HTTP client could not be built (TLS initialisation failed).
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Formats addresses as a comma-separated list for error messages.
fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which addresses webhooks may target: every public address, plus the internal networks
/// an operator explicitly allows (for example a private network of trusted receivers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
}

impl TargetPolicy {
    /// Public addresses only: nothing [internal](is_internal) is allowed.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Public addresses, plus the given internal networks.
    pub fn allowing(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            allowed: nets.into_iter().map(|net| net.trunc()).collect(),
        }
    }

    /// The internal networks this policy allows.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether webhooks may connect to `ip`: public addresses always, internal ones only
    /// inside an allowed network. An IPv4-mapped IPv6 address is judged as its IPv4
    /// address, so allowing `127.0.0.0/8` also allows `::ffff:127.0.0.1`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let canonical = ip.to_canonical();
        self.allowed
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }
}

/// Special-purpose IPv4 networks (RFC 6890 and the IANA registry) webhooks may not target.
const INTERNAL_V4: &[Ipv4Net] = &[
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", unspecified
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8), // private
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, cloud metadata
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12), // private
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24), // documentation TEST-NET-1
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24), // deprecated 6to4 relay anycast
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16), // private
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24), // documentation TEST-NET-3
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, and broadcast
];

/// Special-purpose IPv6 networks webhooks may not target. The ranges that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are handled by [`embedded_v4`] instead.
const INTERNAL_V6: &[Ipv6Net] = &[
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local NAT64
    Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    // IETF protocol assignments, including Teredo (2001::/32), whose embedded client
    // address is obfuscated, ORCHID and benchmarking (2001:2::/48).
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),      // unique local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),     // link-local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),     // site-local
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),      // multicast
];

/// The IPv4 address an IPv6 address stands for, if it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(Ipv4Addr::new(o[12], o[13], o[14], o[15])),
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// Whether `ip` is an internal or otherwise special-purpose address webhooks must not
/// target: loopback, unspecified, private, link-local (cloud metadata), carrier-grade NAT,
/// IETF assignments, documentation, benchmarking, multicast, broadcast and reserved IPv4
/// ranges; IPv6 loopback, unspecified, unique-local, link-local, site-local, multicast,
/// documentation and IETF ranges; and IPv6 addresses embedding an IPv4 address (mapped,
/// compatible, NAT64, 6to4), judged by that IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => INTERNAL_V4.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => {
            if v6.is_loopback() || v6.is_unspecified() {
                return true;
            }
            if let Some(v4) = embedded_v4(v6) {
                return is_internal(IpAddr::V4(v4));
            }
            INTERNAL_V6.iter().any(|net| net.contains(&v6))
        }
    }
}

/// The IP address a URL host names literally (`127.0.0.1`, `[::1]`), if it is one.
///
/// WHATWG parsing has already normalised every IPv4 spelling (decimal `2130706433`, hex
/// `0x7f000001`, octal `0177.0.0.1`, short forms) to dotted quads, and bracketed IPv6.
fn literal_ip(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Checks a user-supplied webhook URL without resolving it: it must be an absolute
/// `http` or `https` URL with a host and no credentials, and a host that is an IP address
/// (in any spelling) must be permitted by `policy`.
///
/// A host name is only checked when connecting (by [`GuardedResolver`]); use
/// [`check_resolved`] to also resolve it now.
pub fn check_url(url: &str, policy: &TargetPolicy) -> Result<Url, TargetError> {
    let parsed = Url::parse(url.trim()).map_err(|e| TargetError::InvalidUrl(e.to_string()))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(TargetError::UnsupportedScheme(other.to_owned())),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(TargetError::MissingHost),
    };
    if let Some(ip) = literal_ip(host)
        && !policy.permits(ip)
    {
        return Err(TargetError::InternalAddress {
            host: host.to_owned(),
            ip,
        });
    }
    Ok(parsed)
}

/// [`check_url`], then resolves a host name and refuses it unless it resolves to at least
/// one permitted address. Meant for registration, to report a bad URL early; deliveries
/// are still checked at every connection by [`GuardedResolver`], since DNS answers change.
pub async fn check_resolved(url: &str, policy: &TargetPolicy) -> Result<Url, TargetError> {
    let parsed = check_url(url, policy)?;
    if let Some(host) = parsed.host_str()
        && literal_ip(host).is_none()
    {
        resolve_permitted(host, policy).await?;
    }
    Ok(parsed)
}

/// Resolves `host` and keeps the addresses `policy` permits; errors when none remain.
async fn resolve_permitted(host: &str, policy: &TargetPolicy) -> Result<Vec<IpAddr>, TargetError> {
    let resolved: Vec<IpAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| TargetError::Unresolvable {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .map(|addr| addr.ip())
        .collect();
    if resolved.is_empty() {
        return Err(TargetError::Unresolvable {
            host: host.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    let permitted: Vec<IpAddr> = resolved
        .iter()
        .copied()
        .filter(|ip| policy.permits(*ip))
        .collect();
    if permitted.is_empty() {
        return Err(TargetError::OnlyInternalAddresses {
            host: host.to_owned(),
            ips: resolved,
        });
    }
    Ok(permitted)
}

/// A reqwest DNS resolver that drops every address the policy does not permit, and fails
/// (with [`TargetError::OnlyInternalAddresses`]) when none remain.
///
/// reqwest connects only to the addresses its resolver returns, so a host name that
/// resolves to an internal address, including one that changes its DNS answer between
/// registration and delivery, is never connected to.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: TargetPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let permitted = resolve_permitted(name.as_str(), &policy).await?;
            let addrs: Addrs = Box::new(
                permitted
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

/// The `User-Agent` webhook requests carry.
pub const USER_AGENT: &str = concat!("mobilesyncdb-webhooks/", env!("CARGO_PKG_VERSION"));

/// The HTTP client for webhook deliveries: resolves through a [`GuardedResolver`] for
/// `policy`, follows no redirects (a 3xx is returned to the caller, whose target was never
/// checked), ignores proxy settings from the environment (a proxy would connect on our
/// behalf, unchecked), and bounds each request by `timeout` (connecting included).
///
/// Only send to URLs that passed [`check_url`]: IP-literal hosts bypass the resolver.
pub fn client(policy: &TargetPolicy, timeout: Duration) -> Result<reqwest::Client, TargetError> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(USER_AGENT)
        .build()
        .map_err(TargetError::Client)
}

impl fmt::Display for TargetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed.is_empty() {
            return f.write_str("public addresses only");
        }
        f.write_str("public addresses and ")?;
        for (i, net) in self.allowed.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn loopback_policy() -> TargetPolicy {
        TargetPolicy::allowing([net("127.0.0.0/8")])
    }

    fn refused_internal(url: &str) {
        match check_url(url, &TargetPolicy::strict()) {
            Err(TargetError::InternalAddress { .. }) => {}
            other => panic!("{url}: expected InternalAddress, got {other:?}"),
        }
    }

    /// Whether a connection reached `listener` (within a short wait).
    async fn connected(listener: &TcpListener) -> bool {
        tokio::time::timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_ok()
    }

    /// The `TargetError` somewhere in an error's source chain.
    fn target_error(error: &reqwest::Error) -> Option<&TargetError> {
        let mut source = error.source();
        while let Some(e) = source {
            if let Some(target) = e.downcast_ref::<TargetError>() {
                return Some(target);
            }
            source = e.source();
        }
        None
    }

    /// Serves one request with a raw HTTP response.
    async fn serve_once(listener: TcpListener, response: String) {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
    }

    #[test]
    fn private_addresses_are_refused() {
        for url in [
            "http://10.0.0.1/",
            "http://192.168.1.1/hook",
            "https://172.16.5.4:8443/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
        ] {
            refused_internal(url);
        }
    }

    #[test]
    fn loopback_is_refused() {
        refused_internal("http://127.0.0.1/");
        refused_internal("http://127.1.2.3:8080/");
        refused_internal("http://[::1]/");
        refused_internal("http://[::]/");
    }

    #[test]
    fn link_local_and_cloud_metadata_are_refused() {
        refused_internal("http://169.254.169.254/latest/meta-data/");
        refused_internal("http://[fe80::1]/");
        refused_internal("http://[fd00:ec2::254]/");
    }

    #[test]
    fn encoded_loopback_is_refused() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://127.0.0.1./",
        ] {
            match check_url(url, &TargetPolicy::strict()) {
                Err(TargetError::InternalAddress { ip, .. }) => {
                    assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST), "{url}");
                }
                other => panic!("{url}: expected InternalAddress, got {other:?}"),
            }
        }
    }

    #[test]
    fn ipv4_embedded_in_ipv6_is_judged_by_the_ipv4() {
        refused_internal("http://[::ffff:127.0.0.1]/");
        refused_internal("http://[::ffff:7f00:1]/");
        refused_internal("http://[::ffff:0:a00:1]/");
        refused_internal("http://[::127.0.0.1]/");
        refused_internal("http://[64:ff9b::a9fe:a9fe]/");
        refused_internal("http://[2002:c0a8:101::1]/");
        // Embedding a public address is fine.
        check_url("http://[::ffff:8.8.8.8]/", &TargetPolicy::strict()).unwrap();
        check_url("http://[64:ff9b::808:808]/", &TargetPolicy::strict()).unwrap();
        check_url("http://[2002:808:808::1]/", &TargetPolicy::strict()).unwrap();
    }

    #[test]
    fn is_internal_covers_the_special_ranges() {
        for ip in [
            "0.1.2.3",
            "10.255.255.255",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fdff::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:a00:1::",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} should be internal");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} should be public");
        }
    }

    #[test]
    fn public_address_is_permitted() {
        let url = check_url("https://93.184.215.14/hooks?x=1", &TargetPolicy::strict()).unwrap();
        assert_eq!(url.host_str(), Some("93.184.215.14"));
        check_url("https://[2606:4700:4700::1111]/", &TargetPolicy::strict()).unwrap();
        // Host names pass the syntactic check; they are checked when resolved.
        check_url("https://hooks.example.com/x", &TargetPolicy::strict()).unwrap();
        assert!(TargetPolicy::strict().permits("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_urls_are_refused() {
        let strict = TargetPolicy::strict();
        assert!(matches!(
            check_url("not a url", &strict),
            Err(TargetError::InvalidUrl(_))
        ));
        assert!(matches!(
            check_url("ftp://example.com/", &strict),
            Err(TargetError::UnsupportedScheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            check_url("file:///etc/passwd", &strict),
            Err(TargetError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            check_url("http://user:pw@example.com/", &strict),
            Err(TargetError::Credentials)
        ));
        assert!(matches!(
            check_url("http://user@example.com/", &strict),
            Err(TargetError::Credentials)
        ));
    }

    #[test]
    fn allowing_a_network_permits_it_only() {
        let policy = loopback_policy();
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("::1".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        check_url("http://127.0.0.1:9/", &policy).unwrap();
        assert_eq!(policy.to_string(), "public addresses and 127.0.0.0/8");
    }

    #[test]
    fn error_messages_name_host_and_address() {
        let err = check_url("http://0x7f000001/", &TargetPolicy::strict()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "webhook host `127.0.0.1` is the internal address 127.0.0.1, which webhooks may not target"
        );
    }

    #[tokio::test]
    async fn check_resolved_refuses_localhost() {
        let url = "http://localhost:1/";
        check_url(url, &TargetPolicy::strict()).unwrap();
        match check_resolved(url, &TargetPolicy::strict()).await {
            Err(TargetError::OnlyInternalAddresses { host, ips }) => {
                assert_eq!(host, "localhost");
                assert!(ips.iter().all(|ip| ip.is_loopback()), "{ips:?}");
            }
            other => panic!("expected OnlyInternalAddresses, got {other:?}"),
        }
        check_resolved(url, &loopback_policy()).await.unwrap();
    }

    #[tokio::test]
    async fn client_refuses_localhost_without_connecting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = client(&TargetPolicy::strict(), Duration::from_secs(5)).unwrap();

        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        match target_error(&err) {
            Some(TargetError::OnlyInternalAddresses { host, .. }) => assert_eq!(host, "localhost"),
            other => panic!("expected the resolver's refusal, got {other:?} from {err:?}"),
        }
        assert!(!connected(&listener).await, "the listener saw a connection");
    }

    #[tokio::test]
    async fn allowed_loopback_request_goes_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(
            listener,
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned(),
        ));
        let client = client(&loopback_policy(), Duration::from_secs(5)).unwrap();
        let url = check_resolved(&format!("http://localhost:{port}/"), &loopback_policy())
            .await
            .unwrap();
        let response = client.post(url).body("{}").send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin_port = origin.local_addr().unwrap().port();
        let location = format!("http://127.0.0.1:{target_port}/");
        let server = tokio::spawn(serve_once(
            origin,
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        ));

        let policy = loopback_policy();
        let url = check_url(&format!("http://127.0.0.1:{origin_port}/hook"), &policy).unwrap();
        let response = client(&policy, Duration::from_secs(5))
            .unwrap()
            .post(url)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        assert_eq!(
            response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some(location.as_str())
        );
        server.await.unwrap();
        assert!(
            !connected(&target).await,
            "the client followed the redirect"
        );
    }
}
