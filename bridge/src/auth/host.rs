//! The `Host` check against DNS rebinding: a page on `evil.example` whose name resolves
//! to 127.0.0.1 reaches the bridge with `Host: evil.example`, so only the bridge's own
//! names are served. The names come from configuration (the bound address, the loopback
//! names, `--allowed-host`, `--public-url`), never from the request.

use std::net::{IpAddr, SocketAddr};

/// The public address of a bridge behind a proxy, e.g. `https://term.example.com`: it
/// names the `ws_url`s the API hands out (`wss://` for `https://`) and is an allowed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    secure: bool,
    authority: String,
    prefix: String,
}

impl std::str::FromStr for PublicUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (secure, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("public URL {s:?} must start with http:// or https://"));
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
            return Err(format!("public URL {s:?} has no valid host"));
        }
        let prefix = path.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(PublicUrl { secure, authority: authority.to_ascii_lowercase(), prefix })
    }
}

impl PublicUrl {
    /// The URL for the bridge bound to `listen` when no public URL is configured (an
    /// unspecified bind address becomes its loopback twin).
    pub fn for_listen(listen: SocketAddr) -> PublicUrl {
        let ip = match listen.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let authority = SocketAddr::new(ip, listen.port()).to_string();
        PublicUrl { secure: false, authority, prefix: String::new() }
    }

    /// `http(s)://authority/prefix`, without a trailing slash.
    pub fn http_base(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.prefix)
    }

    /// `ws(s)://authority/prefix`, without a trailing slash.
    pub fn ws_base(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority, self.prefix)
    }

    /// Whether browsers reach it over TLS (the cookie is then `Secure`).
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The browser origin of pages served under it: `http(s)://authority`.
    pub fn origin(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }
}

/// The bridge's own host names without a port: the loopback names, and the bound
/// address when it is a specific, non-loopback one.
pub fn own_hosts(listen: SocketAddr) -> Vec<String> {
    let mut hosts = vec!["127.0.0.1".to_string(), "localhost".to_string(), "[::1]".to_string()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        hosts.push(match listen.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    hosts
}

/// The names the bridge answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    names: Vec<String>,
}

impl HostPolicy {
    /// The names of a bridge bound to `listen`, plus `extra` (`--allowed-host`: a name
    /// without a port allows it bare and with the bound port) and the public URL's.
    pub fn new(listen: SocketAddr, extra: &[String], public: Option<&PublicUrl>) -> HostPolicy {
        let port = listen.port();
        let bare = own_hosts(listen);
        let mut names: Vec<String> = bare.iter().map(|h| format!("{h}:{port}")).collect();
        if port == 80 {
            names.extend(bare);
        }
        for host in extra.iter().map(|h| h.trim().to_ascii_lowercase()) {
            if has_port(&host) {
                names.push(host);
            } else {
                names.push(format!("{host}:{port}"));
                names.push(host);
            }
        }
        if let Some(public) = public {
            names.push(public.authority().to_string());
        }
        HostPolicy { names }
    }

    /// Whether a request with this `Host` is for us.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        self.names.contains(&host)
    }

    /// The names, for the refusal message.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// `host:port` or `[v6]:port`, as opposed to a bare name or `[v6]`.
fn has_port(host: &str) -> bool {
    match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_with_the_port_and_configured_names() {
        let public: PublicUrl = "https://Term.Example.com/shell/".parse().unwrap();
        let p = HostPolicy::new(
            "127.0.0.1:3000".parse().unwrap(),
            &["box.lan".into(), "other:9000".into()],
            Some(&public),
        );
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST:3000",
            "[::1]:3000",
            "box.lan",
            "box.lan:3000",
            "other:9000",
            "term.example.com",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in ["evil.example", "evil.example:3000", "localhost", "127.0.0.1:3001", "other", ""]
        {
            assert!(!p.allows(bad), "{bad}");
        }
    }

    #[test]
    fn public_urls_name_ws_urls() {
        let p: PublicUrl = "https://term.example.com/shell/".parse().unwrap();
        assert_eq!(p.ws_base(), "wss://term.example.com/shell");
        assert_eq!(p.http_base(), "https://term.example.com/shell");
        assert!(p.secure());
        let local = PublicUrl::for_listen("0.0.0.0:3000".parse().unwrap());
        assert_eq!(local.ws_base(), "ws://127.0.0.1:3000");
        assert!("ftp://x".parse::<PublicUrl>().is_err());
        assert!("https:///x".parse::<PublicUrl>().is_err());
    }
}
