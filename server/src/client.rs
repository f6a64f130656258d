//! The client's address, as the failed sign-in throttle counts it.
//!
//! It is the socket's peer address (`listen::PeerAddr`). Behind a reverse proxy every
//! request comes from the proxy, so every client would share one address and one
//! throttle: list the proxy with `--trusted-proxy`, and for requests from it the address
//! is the last one in `X-Forwarded-For` that is not itself a trusted proxy (each proxy
//! appends the address it received from; the ones a client wrote itself come first and
//! are never believed). `X-Forwarded-For` from anyone else is ignored.
//!
//! An IPv6 client counts by its /64 prefix: one host is given a /64 and could otherwise
//! try from a new address each time. A request with no socket (the tests' `oneshot`)
//! counts as `unknown`.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::AppState;
use crate::listen::PeerAddr;

/// The client's address, as the throttle keys it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub String);

impl ClientAddr {
    /// The key of an address: IPv4 as it is, IPv6 by its /64 prefix.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(v4.to_string()),
                None => {
                    let s = v6.segments();
                    Self(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
                }
            },
        }
    }

    /// The address of a request from `peer` with these headers, given the trusted proxies.
    pub fn resolve(peer: Option<IpAddr>, headers: &axum::http::HeaderMap, trusted: &[IpAddr]) -> Self {
        let Some(mut ip) = peer else { return Self("unknown".into()) };
        if trusted.contains(&ip) {
            // Right to left: the nearest hop first; stop at the first one not trusted.
            let hops = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect::<Vec<_>>();
            for hop in hops.iter().rev() {
                let Ok(hop) = hop.parse::<IpAddr>() else { break };
                ip = hop;
                if !trusted.contains(&hop) {
                    break;
                }
            }
        }
        Self::of(ip)
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        Ok(Self::resolve(peer, &parts.headers, &state.options.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn the_peer_is_the_client_unless_it_is_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7".parse().expect("a header"));
        let untrusted = ClientAddr::resolve(Some(ip("192.0.2.1")), &headers, &[]);
        assert_eq!(untrusted.0, "192.0.2.1", "a client's own X-Forwarded-For is ignored");
        let proxied = ClientAddr::resolve(Some(ip("10.0.0.2")), &headers, &[ip("10.0.0.2")]);
        assert_eq!(proxied.0, "198.51.100.7", "the hop the proxy saw");
        // Two proxies in a row: the first untrusted hop from the right.
        headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.3".parse().expect("a header"));
        let chained = ClientAddr::resolve(Some(ip("10.0.0.2")), &headers, &[ip("10.0.0.2"), ip("10.0.0.3")]);
        assert_eq!(chained.0, "198.51.100.7");
        // Garbage stops the walk at the last good hop.
        headers.insert("x-forwarded-for", "nonsense".parse().expect("a header"));
        assert_eq!(ClientAddr::resolve(Some(ip("10.0.0.2")), &headers, &[ip("10.0.0.2")]).0, "10.0.0.2");
        assert_eq!(ClientAddr::resolve(None, &headers, &[]).0, "unknown");
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64_prefix() {
        let a = ClientAddr::of(ip("2001:db8:1:2::1"));
        let b = ClientAddr::of(ip("2001:db8:1:2:ffff::9"));
        assert_eq!(a, b);
        assert_eq!(a.0, "2001:db8:1:2::/64");
        assert_eq!(ClientAddr::of(ip("::ffff:192.0.2.1")).0, "192.0.2.1");
    }
}
