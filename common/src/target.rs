//! Which target URLs the service may call.
//!
//! Without these checks anyone who can create a subscription could make the service POST
//! into its own network (cloud metadata at 169.254.169.254, databases on loopback, ...).
//! The API checks when a subscription is written and the worker checks again at delivery
//! time, since DNS can change in between.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Longest target URL accepted.
pub const MAX_URL_LENGTH: usize = 2048;

/// Why a target URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target_url is longer than {MAX_URL_LENGTH} characters")]
    TooLong,
    #[error("target_url is not an absolute URL: {0}")]
    NotAbsolute(url::ParseError),
    #[error("target_url must use http or https")]
    UnsupportedScheme,
    #[error("target_url must not contain a user name or password")]
    HasCredentials,
    #[error("target_url has no host")]
    NoHost,
    #[error("target_url's port must not be 0")]
    PortZero,
    #[error("target_url points at a non-public address")]
    NonPublicAddress,
    #[error("target_url's host does not resolve")]
    Unresolvable,
}

/// Parses and checks everything about a target URL that needs no DNS.
pub fn parse_target_url(raw: &str) -> Result<Url, TargetError> {
    if raw.len() > MAX_URL_LENGTH {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw).map_err(TargetError::NotAbsolute)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::UnsupportedScheme);
    }
    // Credentials in the URL would be shown in every attempt log and status response.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::HasCredentials);
    }
    if url.host().is_none() {
        return Err(TargetError::NoHost);
    }
    if url.port() == Some(0) {
        return Err(TargetError::PortZero);
    }
    Ok(url)
}

/// Checks that the URL's host is a public address, resolving names. IP literals in any
/// notation the URL parser accepts (decimal, hex, IPv4-mapped IPv6) arrive here normalised.
pub async fn check_public_host(url: &Url) -> Result<(), TargetError> {
    match url.host() {
        None => Err(TargetError::NoHost),
        Some(Host::Ipv4(ip)) => require_public(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => require_public(IpAddr::V6(ip)),
        Some(Host::Domain(domain)) => {
            if is_local_name(domain) {
                return Err(TargetError::NonPublicAddress);
            }
            let port = url.port_or_known_default().unwrap_or(443);
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|_| TargetError::Unresolvable)?
                .collect();
            if addresses.is_empty() {
                return Err(TargetError::Unresolvable);
            }
            // Every address must be public: the connection may go to any of them.
            addresses
                .iter()
                .try_for_each(|address| require_public(address.ip()))
        }
    }
}

/// The literal IP address of a URL's host, if it has one.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(_) => None,
    }
}

fn require_public(ip: IpAddr) -> Result<(), TargetError> {
    if is_public(ip) {
        Ok(())
    } else {
        Err(TargetError::NonPublicAddress)
    }
}

fn is_local_name(domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    domain == "localhost" || domain.ends_with(".localhost") || domain.ends_with(".internal")
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || a >= 240; // reserved for future use
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let first = ip.segments()[0];
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link local, fe80::/10
        || (first & 0xffc0) == 0xfec0 // deprecated site local, fec0::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8); // documentation
    !reserved
}

/// The IPv4 address inside IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated
/// (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, and the
/// local-use `64:ff9b:1::/48`, which embeds the address in its last 32 bits) and 6to4
/// (`2002::/16`) addresses, which reach that IPv4 host.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let octets = ip.octets();
    let tail = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(tail);
    }
    if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some(tail);
    }
    if segments[..2] == [0x64, 0xff9b] || segments[..3] == [0x64, 0xff9b, 1] {
        return Some(tail);
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(raw: &str) -> Result<(), TargetError> {
        let url = parse_target_url(raw)?;
        check_public_host(&url).await
    }

    #[tokio::test]
    async fn loopback_and_metadata_are_refused_in_every_notation() {
        let cases = [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:169.254.169.254]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[64:ff9b:1::7f00:1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://0.0.0.0:8080/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://localhost:9000/",
            "http://api.localhost/",
            "http://LOCALHOST./",
        ];
        for raw in cases {
            assert_eq!(
                check(raw).await,
                Err(TargetError::NonPublicAddress),
                "{raw}"
            );
        }
    }

    #[tokio::test]
    async fn public_literals_are_allowed() {
        for raw in [
            "http://93.184.216.34/hook",
            "https://[2606:4700::1111]:8443/x",
        ] {
            assert_eq!(check(raw).await, Ok(()), "{raw}");
        }
    }

    #[test]
    fn malformed_urls_are_refused() {
        assert!(matches!(
            parse_target_url("/relative"),
            Err(TargetError::NotAbsolute(_))
        ));
        assert_eq!(
            parse_target_url("ftp://example.com/"),
            Err(TargetError::UnsupportedScheme)
        );
        assert_eq!(
            parse_target_url("file:///etc/passwd"),
            Err(TargetError::UnsupportedScheme)
        );
        assert_eq!(
            parse_target_url("https://user:pw@example.com/"),
            Err(TargetError::HasCredentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LENGTH));
        assert_eq!(parse_target_url(&long), Err(TargetError::TooLong));
        assert!(parse_target_url("https://example.com:65535/x?y=1").is_ok());
        assert!(parse_target_url("https://example.com:70000/").is_err());
    }
}
