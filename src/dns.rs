//! Name resolution for outbound calls the server makes on its users' behalf (webhook targets,
//! SPEC §10; domain checks, §11): hickory-resolver over the system's `resolv.conf`, or one DNS
//! server named by `--dns-resolver IP:PORT` (tests stage names on a server of their own).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Longest wait for one name.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// One server (`Some`), or the system's configuration.
    pub fn new(server: Option<SocketAddr>) -> Result<Resolver, String> {
        let mut builder = match server {
            Some(addr) => {
                let mut name_server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut name_server.connections {
                    connection.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("the system's DNS configuration is unusable: {e}"))?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        // Every address a name has: a target is refused if any of them is (SPEC §10).
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Names change under tests and operators alike: trust a record for a minute at most.
        options.positive_max_ttl = Some(Duration::from_secs(60));
        options.negative_max_ttl = Some(Duration::from_secs(5));
        let inner = builder.build().map_err(|e| format!("DNS resolver: {e}"))?;
        Ok(Resolver { inner })
    }

    /// The strings of `name`'s TXT records (each record's strings joined, as verifiers read
    /// them); none when the name has no TXT record.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, self.inner.lookup(name, RecordType::TXT))
            .await
            .map_err(|_| format!("looking up {name} timed out"))?;
        let lookup = match lookup {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() => return Ok(Vec::new()),
            Err(e) => return Err(format!("looking up {name} failed: {e}")),
        };
        let mut out = Vec::new();
        for record in lookup.answers() {
            if let RData::TXT(txt) = &record.data {
                let joined: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|part| part.iter().copied())
                    .collect();
                out.push(String::from_utf8_lossy(&joined).into_owned());
            }
        }
        Ok(out)
    }

    /// The addresses of `host` (an IP literal answers itself), or why there are none.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, self.inner.lookup_ip(bare))
            .await
            .map_err(|_| format!("resolving {bare} timed out"))?
            .map_err(|e| format!("{bare} does not resolve: {e}"))?;
        let found: Vec<IpAddr> = lookup.iter().collect();
        if found.is_empty() {
            return Err(format!("{bare} has no address"));
        }
        Ok(found)
    }
}
