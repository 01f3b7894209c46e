//! Flags and environment → one [`ServeConfig`]. A flag wins over `ELIZA_CLOUD_<FLAG>`, which wins
//! over the default. Every value is validated here, so the server never starts half-configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::api_key::{PlainKey, parse_plain_key};
use crate::cli::ServeArgs;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_DATA_DIR: &str = "./eliza-cloud-data";
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:3000";
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
pub const DEFAULT_INITIAL_FREE_CREDITS_MICROS: i64 = 5_000_000;
pub const BOOTSTRAP_KEY_ENV: &str = "ELIZA_CLOUD_BOOTSTRAP_KEY";
pub const DATA_ENV: &str = "ELIZA_CLOUD_DATA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// The public URL, split once into the parts the rules use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// Without a trailing slash, e.g. `https://cloud.example.com`.
    pub url: String,
    /// `scheme://host[:port]`, compared with `Origin` for the CSRF rule.
    pub origin: String,
    /// `host[:port]`, the SIWE domain.
    pub host: String,
    pub https: bool,
}

impl PublicUrl {
    pub fn parse(text: &str) -> Result<PublicUrl, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if text.contains(['?', '#']) || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain a query, a fragment or spaces".into());
        }
        let (host, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if host.is_empty() || host.contains('@') {
            return Err("needs a host and no user name".into());
        }
        let host = host.to_ascii_lowercase();
        let scheme = if https { "https" } else { "http" };
        let origin = format!("{scheme}://{host}");
        let path = path.trim_end_matches('/');
        Ok(PublicUrl {
            url: format!("{origin}{path}"),
            origin,
            host,
            https,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub public_url: PublicUrl,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    pub max_connections: usize,
    /// Most connections one client address holds at once (an IPv6 client's /64 counts as one
    /// address); not applied with `trust_proxy`, where every peer is the operator's proxy.
    pub max_connections_per_address: usize,
    /// A connection of either protocol with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    pub trust_proxy: bool,
    pub header_timeout: Duration,
    /// Time a request body gets to arrive once a handler reads it (408 after).
    pub body_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub max_body_bytes: usize,
    /// Most rate-limit buckets held at once (least recently used go first). Not a flag: the
    /// default bounds memory to a few tens of MB; tests shrink it to watch the bound hold.
    pub max_buckets: u64,
    /// How often the usage counters are flushed (not a flag: SPEC §1 asks for at least every
    /// second; tests lengthen it to see the shutdown flush alone).
    pub usage_flush_interval: Duration,
    /// From `ELIZA_CLOUD_BOOTSTRAP_KEY`: registered for the operator on the first start.
    pub bootstrap_key: Option<PlainKey>,
    /// The sign-up bonus for a wallet's first sign-in, micro-dollars; 0 disables.
    pub initial_free_credits_micros: i64,
    /// x402 payments (SPEC §7).
    pub x402: crate::x402::X402Config,
    /// The metered gateway (SPEC §9).
    pub gateway: crate::gateway::GatewayConfig,
    /// Apps' earnings and webhooks (SPEC §10).
    pub apps: AppsConfig,
}

/// Default `--earnings-hold`: 7 days.
pub const DEFAULT_EARNINGS_HOLD: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Clone)]
pub struct AppsConfig {
    /// An earning is pending this long after its call, then available.
    pub earnings_hold: Duration,
    /// Where webhook targets' names are resolved; `None`: the system's resolver.
    pub dns_resolver: Option<SocketAddr>,
    /// Webhooks may go to private and loopback addresses (development, tests).
    pub allow_private_webhooks: bool,
    /// Apps answer at `<subdomain>.<apps_domain>` (SPEC §11).
    pub apps_domain: String,
    /// The HTTPS listener (SPEC §11).
    pub tls_listen: Option<SocketAddr>,
    /// The public host's own certificate (chain PEM, key PEM), instead of the local CA's.
    pub tls_cert: Option<(String, crate::domains::certs::KeyPem)>,
    /// The operator's wildcard for `*.<apps_domain>` (chain PEM, key PEM), instead of the local
    /// CA's.
    pub apps_wildcard: Option<(String, crate::domains::certs::KeyPem)>,
    /// The `acme` issuer for verified domains and the public host; `None`: the `local` issuer.
    pub acme: Option<crate::domains::acme::AcmeConfig>,
    /// Not a flag: SPEC §10's 10 s for a receiver's answer.
    pub webhook_timeout: Duration,
    /// Not a flag: deliveries sent at once.
    pub webhook_workers: usize,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            earnings_hold: DEFAULT_EARNINGS_HOLD,
            apps_domain: crate::domains::DEFAULT_APPS_DOMAIN.into(),
            tls_listen: None,
            tls_cert: None,
            apps_wildcard: None,
            acme: None,
            dns_resolver: None,
            allow_private_webhooks: false,
            webhook_timeout: Duration::from_secs(10),
            webhook_workers: 16,
        }
    }
}

impl ServeConfig {
    /// The defaults of a fresh machine, with the data directory given.
    pub fn with_data_dir(data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir,
            public_url: PublicUrl {
                url: DEFAULT_PUBLIC_URL.into(),
                origin: DEFAULT_PUBLIC_URL.into(),
                host: "localhost:3000".into(),
                https: false,
            },
            log_format: LogFormat::Plain,
            log_level: LogLevel::Info,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            trust_proxy: false,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_buckets: crate::state::MAX_BUCKETS,
            usage_flush_interval: crate::server::USAGE_FLUSH_INTERVAL,
            bootstrap_key: None,
            initial_free_credits_micros: DEFAULT_INITIAL_FREE_CREDITS_MICROS,
            x402: crate::x402::X402Config::default(),
            gateway: crate::gateway::GatewayConfig::default(),
            apps: AppsConfig::default(),
        }
    }

    /// Resolves flags, then `ELIZA_CLOUD_<FLAG>` read through `env`, then defaults. The error
    /// names the flag and the variable.
    pub fn resolve(
        args: &ServeArgs,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig, String> {
        let pick = |flag: &Option<String>, name: &str| -> Option<(String, String)> {
            let var = format!(
                "ELIZA_CLOUD_{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            match flag {
                Some(v) => Some((v.clone(), format!("--{name}"))),
                None => env(&var).map(|v| (v, var)),
            }
        };
        let mut config = ServeConfig::with_data_dir(PathBuf::from(DEFAULT_DATA_DIR));
        if let Some((v, from)) = pick(&args.listen, "listen") {
            config.listen = v
                .parse()
                .map_err(|_| format!("{from}: {v:?} is not an address like 127.0.0.1:3000"))?;
        }
        if let Some((v, _)) = pick(&args.data, "data") {
            config.data_dir = PathBuf::from(v);
        }
        if let Some((v, from)) = pick(&args.public_url, "public-url") {
            config.public_url = PublicUrl::parse(&v).map_err(|e| format!("{from}: {e}"))?;
        }
        if let Some((v, from)) = pick(&args.log_format, "log-format") {
            config.log_format = match v.as_str() {
                "plain" => LogFormat::Plain,
                "json" => LogFormat::Json,
                _ => return Err(format!("{from}: {v:?} is not plain or json")),
            };
        }
        if let Some((v, from)) = pick(&args.log_level, "log-level") {
            config.log_level = match v.as_str() {
                "error" => LogLevel::Error,
                "warn" => LogLevel::Warn,
                "info" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                _ => {
                    return Err(format!(
                        "{from}: {v:?} is not error, warn, info, debug or trace"
                    ));
                }
            };
        }
        if let Some((v, from)) = pick(&args.max_connections, "max-connections") {
            config.max_connections = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("{from}: {v:?} is not a number from 1 to 1000000"))?;
        }
        if let Some((v, from)) = pick(
            &args.max_connections_per_address,
            "max-connections-per-address",
        ) {
            config.max_connections_per_address = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .ok_or_else(|| format!("{from}: {v:?} is not a number from 1 to 1000000"))?;
        }
        if let Some((v, from)) = pick(&args.idle_timeout, "idle-timeout") {
            config.idle_timeout = parse_duration(&v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{from}: {v:?} is not a duration like 60s or 500ms"))?;
        }
        config.trust_proxy = if args.trust_proxy {
            true
        } else {
            match env("ELIZA_CLOUD_TRUST_PROXY") {
                Some(v) => parse_bool(&v).ok_or_else(|| {
                    format!("ELIZA_CLOUD_TRUST_PROXY: {v:?} is not true or false")
                })?,
                None => false,
            }
        };
        if let Some((v, from)) = pick(&args.header_timeout, "header-timeout") {
            config.header_timeout = parse_duration(&v)
                .ok_or_else(|| format!("{from}: {v:?} is not a duration like 10s or 500ms"))?;
        }
        if let Some((v, from)) = pick(&args.body_timeout, "body-timeout") {
            config.body_timeout = parse_duration(&v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{from}: {v:?} is not a duration like 30s or 500ms"))?;
        }
        if let Some((v, from)) = pick(&args.shutdown_timeout, "shutdown-timeout") {
            config.shutdown_timeout = parse_duration(&v)
                .ok_or_else(|| format!("{from}: {v:?} is not a duration like 10s or 500ms"))?;
        }
        if let Some((v, from)) = pick(&args.max_body_bytes, "max-body-bytes") {
            config.max_body_bytes = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1024..=64 << 20).contains(n))
                .ok_or_else(|| format!("{from}: {v:?} is not a number from 1024 to 67108864"))?;
        }
        let credits = pick(&args.initial_free_credits, "initial-free-credits")
            .or_else(|| env("INITIAL_FREE_CREDITS").map(|v| (v, "INITIAL_FREE_CREDITS".into())));
        if let Some((v, from)) = credits {
            config.initial_free_credits_micros = crate::money::parse_dollars(v.trim())
                .filter(|m| *m <= 1_000_000 * crate::money::MICROS_PER_DOLLAR)
                .ok_or_else(|| {
                    format!("{from}: {v:?} is not a dollar amount like 5 or 0.5 (0 disables)")
                })?;
        }
        resolve_x402(&mut config.x402, &pick, args)?;
        resolve_gateway(&mut config.gateway, &pick, args)?;
        resolve_apps(&mut config.apps, &pick, args, env)?;
        if config.gateway.models.uses_upstream()
            && config.x402.settlement == crate::x402::Settlement::TrustSignature
        {
            return Err(
                "--x402-settlement trust-signature credits payments that cost nothing \
                 real, so it cannot buy upstream calls: remove it, or serve only dev models"
                    .into(),
            );
        }
        if let Some(key) = env(BOOTSTRAP_KEY_ENV) {
            // Never echo the value: it is a secret, even when malformed.
            config.bootstrap_key = Some(parse_plain_key(key.trim()).map_err(|e| {
                format!(
                    "{BOOTSTRAP_KEY_ENV} is not a well-formed eliza-cloud key ({e}); \
                     expected ek_live_ or ek_test_, 40 base62 characters and a 6-character checksum"
                )
            })?);
        }
        Ok(config)
    }
}

/// A flag's value (or its variable's) and the name to blame in an error.
type Pick<'a> = &'a dyn Fn(&Option<String>, &str) -> Option<(String, String)>;

/// The x402 flags (SPEC §7), checked together: a facilitator and `trust-signature` exclude each
/// other, and `trust-signature` is refused for a mainnet network.
fn resolve_x402(
    x402: &mut crate::x402::X402Config,
    pick: Pick<'_>,
    args: &ServeArgs,
) -> Result<(), String> {
    use crate::crypto::eth::Address;
    use crate::x402::{Settlement, builtin_networks, parse_custom_networks};
    if let Some((v, from)) = pick(&args.x402_pay_to, "x402-pay-to") {
        x402.pay_to =
            Some(Address::parse_any_case(v.trim()).map_err(|_| {
                format!("{from}: {v:?} is not an EVM address (0x + 40 hex digits)")
            })?);
    }
    let mut networks = builtin_networks();
    if let Some((v, from)) = pick(&args.x402_networks, "x402-networks") {
        networks.extend(parse_custom_networks(&v).map_err(|e| format!("{from}: {e}"))?);
    }
    if let Some((v, from)) = pick(&args.x402_network, "x402-network") {
        let name = v.trim();
        x402.network = networks
            .iter()
            .rev()
            .find(|n| n.is_named(name))
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
                format!("{from}: {name:?} is not one of {}", known.join(", "))
            })?;
    }
    if let Some((v, from)) = pick(&args.x402_topup_amounts, "x402-topup-amounts") {
        let amounts: Option<Vec<i64>> = v
            .split(',')
            .map(|a| crate::money::parse_dollars(a.trim()).filter(|m| *m > 0))
            .collect();
        x402.topup_amounts_micros = amounts.filter(|a| !a.is_empty()).ok_or_else(|| {
            format!("{from}: {v:?} is not a list of dollar amounts like 10,50,100")
        })?;
    }
    if let Some((v, from)) = pick(&args.x402_facilitator_timeout, "x402-facilitator-timeout") {
        x402.facilitator_timeout = parse_duration(&v)
            .ok_or_else(|| format!("{from}: {v:?} is not a duration like 15s"))?;
    }
    if let Some((v, from)) = pick(&args.x402_facilitator_ca, "x402-facilitator-ca") {
        x402.facilitator_ca_pem =
            Some(std::fs::read(&v).map_err(|e| format!("{from}: cannot read {v:?}: {e}"))?);
    }
    let facilitator = pick(&args.x402_facilitator, "x402-facilitator");
    let settlement = pick(&args.x402_settlement, "x402-settlement");
    x402.settlement = match (facilitator, settlement) {
        (Some((_, f)), Some((_, s))) => {
            return Err(format!(
                "{f} and {s} exclude each other: choose one way to settle"
            ));
        }
        (Some((url, from)), None) => {
            crate::x402::facilitator::validate_url(url.trim())
                .map_err(|e| format!("{from}: {e}"))?;
            Settlement::Facilitator(url.trim().to_string())
        }
        (None, Some((mode, from))) => {
            if mode.trim() != "trust-signature" {
                return Err(format!("{from}: {mode:?} is not trust-signature"));
            }
            if !x402.network.testnet {
                return Err(format!(
                    "{from}: trust-signature settlement is for test networks only, and {} is a \
                     mainnet network; use --x402-facilitator",
                    x402.network.name
                ));
            }
            Settlement::TrustSignature
        }
        (None, None) => Settlement::None,
    };
    crate::x402::settlement::facilitator_of(x402).map_err(|e| format!("x402 facilitator: {e}"))?;
    Ok(())
}

/// The apps' flags (SPEC §10): the earnings hold, the webhooks' resolver and address rule.
fn resolve_apps(
    apps: &mut AppsConfig,
    pick: Pick<'_>,
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if let Some((v, from)) = pick(&args.earnings_hold, "earnings-hold") {
        apps.earnings_hold = parse_hold(&v)
            .ok_or_else(|| format!("{from}: {v:?} is not a hold like 7d, 12h, 30m or 0"))?;
    }
    if let Some((v, from)) = pick(&args.apps_domain, "apps-domain") {
        let name = v.trim().trim_end_matches('.').to_ascii_lowercase();
        // Any two-label name will do (`apps.localhost` included): the same rules as a custom
        // domain's, checked against a domain it cannot be under.
        crate::domains::name::check_domain(&name, "invalid.invalid")
            .map_err(|why| format!("{from}: {v:?} {why}"))?;
        apps.apps_domain = name;
    }
    if let Some((v, from)) = pick(&args.tls_listen, "tls-listen") {
        apps.tls_listen = Some(
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{from}: {v:?} is not an IP:PORT like 0.0.0.0:3443"))?,
        );
    }
    apps.tls_cert = cert_pair(
        pick(&args.tls_cert, "tls-cert"),
        pick(&args.tls_key, "tls-key"),
        "--tls-cert and --tls-key go together",
    )?;
    apps.apps_wildcard = cert_pair(
        pick(&args.apps_wildcard_cert, "apps-wildcard-cert"),
        pick(&args.apps_wildcard_key, "apps-wildcard-key"),
        "--apps-wildcard-cert and --apps-wildcard-key go together",
    )?;
    let email = pick(&args.acme_email, "acme-email");
    let ca = pick(&args.acme_ca, "acme-ca");
    match pick(&args.acme_directory, "acme-directory") {
        Some((v, from)) => {
            let directory = crate::domains::acme::AcmeConfig::directory_of(&v)
                .map_err(|why| format!("{from}: {why}"))?;
            let email = match email {
                Some((e, ef)) => {
                    let e = e.trim().trim_start_matches("mailto:").to_string();
                    let (user, host) = e.split_once('@').unwrap_or(("", ""));
                    if user.is_empty() || !host.contains('.') || e.contains(char::is_whitespace) {
                        return Err(format!("{ef}: {e:?} is not an email address"));
                    }
                    Some(e)
                }
                None => None,
            };
            let extra_roots_pem = match ca {
                Some((path, cf)) => {
                    let pem = std::fs::read_to_string(&path)
                        .map_err(|e| format!("{cf}: cannot read {path:?}: {e}"))?;
                    crate::domains::acme::roots_of(&pem)
                        .map_err(|why| format!("{cf}: {path:?} {why}"))?;
                    Some(pem)
                }
                None => None,
            };
            apps.acme = Some(crate::domains::acme::AcmeConfig {
                directory,
                email,
                extra_roots_pem,
            });
        }
        None => {
            if let Some((_, from)) = email.or(ca) {
                return Err(format!("{from} needs --acme-directory"));
            }
        }
    }
    if let Some((v, from)) = pick(&args.dns_resolver, "dns-resolver") {
        apps.dns_resolver = Some(
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{from}: {v:?} is not an IP:PORT like 127.0.0.1:53"))?,
        );
    }
    apps.allow_private_webhooks = if args.allow_private_webhooks {
        true
    } else {
        match env("ELIZA_CLOUD_ALLOW_PRIVATE_WEBHOOKS") {
            Some(v) => parse_bool(&v).ok_or_else(|| {
                format!("ELIZA_CLOUD_ALLOW_PRIVATE_WEBHOOKS: {v:?} is not true or false")
            })?,
            None => false,
        }
    };
    Ok(())
}

/// A certificate and its key from two files (`--tls-cert`/`--tls-key`, `--apps-wildcard-*`),
/// checked to load.
fn cert_pair(
    cert: Option<(String, String)>,
    key: Option<(String, String)>,
    apart: &str,
) -> Result<Option<(String, crate::domains::certs::KeyPem)>, String> {
    match (cert, key) {
        (Some((cert, cf)), Some((key, kf))) => {
            let chain = std::fs::read_to_string(&cert)
                .map_err(|e| format!("{cf}: cannot read {cert:?}: {e}"))?;
            let key_pem = std::fs::read_to_string(&key)
                .map_err(|e| format!("{kf}: cannot read {key:?}: {e}"))?;
            let pair = (chain, crate::domains::certs::KeyPem(key_pem));
            crate::domains::certs::certified_key(&crate::domains::certs::operator(&pair))
                .map_err(|e| format!("{cf}, {kf}: {e}"))?;
            Ok(Some(pair))
        }
        (None, None) => Ok(None),
        _ => Err(apart.into()),
    }
}

/// An earnings hold: `0`, or a whole number of `d`/`h`/`m`/`s` (`days`, `hours`, … too), at
/// most 365 days.
pub fn parse_hold(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let unit_secs: u64 = match unit.trim() {
        "d" | "day" | "days" => 86_400,
        "h" | "hour" | "hours" => 3_600,
        "m" | "min" | "minutes" => 60,
        "s" | "sec" | "seconds" => 1,
        _ => return None,
    };
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    let secs = digits.parse::<u64>().ok()?.checked_mul(unit_secs)?;
    (secs <= 365 * 86_400).then(|| Duration::from_secs(secs))
}

/// The gateway's flags (SPEC §9): the model table, markup, upstream and debit commits. With
/// `--upstream-url` and no `--models`, the built-in models go upstream.
fn resolve_gateway(
    gateway: &mut crate::gateway::GatewayConfig,
    pick: Pick<'_>,
    args: &ServeArgs,
) -> Result<(), String> {
    use crate::gateway::billing::CommitMode;
    use crate::gateway::models::{MAX_MARKUP_PERCENT, ModelTable, Provider};
    use crate::gateway::providers::openai_compatible::{UpstreamKey, validate_url};
    if let Some((v, from)) = pick(&args.markup_percent, "markup-percent") {
        gateway.markup_percent = v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|m| *m <= MAX_MARKUP_PERCENT)
            .ok_or_else(|| {
                format!("{from}: {v:?} is not a whole percent from 0 to {MAX_MARKUP_PERCENT}")
            })?;
    }
    if let Some((v, from)) = pick(&args.upstream_url, "upstream-url") {
        validate_url(v.trim()).map_err(|e| format!("{from}: {e}"))?;
        gateway.upstream_url = Some(v.trim().to_string());
    }
    if let Some((v, _)) = pick(&args.upstream_key, "upstream-key") {
        // Never echoed anywhere: the key is a secret.
        gateway.upstream_key = Some(UpstreamKey::new(v.trim().to_string()));
    }
    if let Some((v, from)) = pick(&args.upstream_timeout, "upstream-timeout") {
        gateway.upstream_timeout = parse_duration(&v)
            .ok_or_else(|| format!("{from}: {v:?} is not a duration like 120s or 500ms"))?;
    }
    if let Some((v, from)) = pick(&args.debit_commit, "debit-commit") {
        gateway.commit = match v.trim() {
            "grouped" => CommitMode::Grouped,
            "per-call" => CommitMode::PerCall,
            _ => return Err(format!("{from}: {v:?} is not grouped or per-call")),
        };
    }
    gateway.models = std::sync::Arc::new(match pick(&args.models, "models") {
        Some((path, from)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{from}: cannot read {path:?}: {e}"))?;
            ModelTable::parse(&path, &text).map_err(|e| format!("{from} {path:?}: {e}"))?
        }
        None if gateway.upstream_url.is_some() => ModelTable::builtin(Provider::OpenAiCompatible),
        None => ModelTable::builtin(Provider::Dev),
    });
    if gateway.models.uses_upstream() && gateway.upstream_url.is_none() {
        return Err(
            "a model of the table uses the openai-compatible provider: set --upstream-url".into(),
        );
    }
    Ok(())
}

/// The data directory of an offline command: `--data`, else `ELIZA_CLOUD_DATA`, else the default.
pub fn offline_data_dir(flag: &Option<String>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    PathBuf::from(
        flag.clone()
            .or_else(|| env(DATA_ENV))
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string()),
    )
}

/// Checks the URL of a service we call (an x402 facilitator, a model upstream): `http://` or
/// `https://`, a host, no query.
pub fn validate_http_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        // Never echoed: the user part may be a credential.
        return Err("the URL must not carry a user name or password (give keys by flag)".into());
    }
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(format!("{url:?} needs a host and no query"));
    }
    Ok(())
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `250ms`, `10s`, `2m`, or a bare number of seconds; at most one hour.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else {
        (text, 1000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 9 {
        return None;
    }
    let millis = digits.parse::<u64>().ok()?.checked_mul(unit_ms)?;
    (1..=3_600_000)
        .contains(&millis)
        .then(|| Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_acme_issuer_and_the_apps_wildcard_by_flag_or_variable() {
        let c = ServeConfig::resolve(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert!(c.apps.acme.is_none(), "the local issuer by default");
        assert!(c.apps.apps_wildcard.is_none());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.pem");
        let store = crate::store::Store::open(&dir.path().join("data")).unwrap();
        let cert = store
            .write(|txn| crate::domains::certs::issue_local(txn, &["*.apps.example.com".into()], 0))
            .unwrap();
        let ca = store.read(crate::domains::certs::ca_pem).unwrap().unwrap();
        std::fs::write(&root, &ca).unwrap();
        let chain = dir.path().join("wild.pem");
        let key = dir.path().join("wild.key");
        std::fs::write(&chain, &cert.chain_pem).unwrap();
        std::fs::write(&key, &cert.key_pem).unwrap();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        let env = env_of(&[
            ("ELIZA_CLOUD_ACME_DIRECTORY", "letsencrypt-staging"),
            ("ELIZA_CLOUD_ACME_EMAIL", "mailto:ops@example.com"),
        ]);
        let args = ServeArgs {
            acme_ca: Some(path(&root)),
            apps_wildcard_cert: Some(path(&chain)),
            apps_wildcard_key: Some(path(&key)),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args, &env).unwrap();
        let acme = c.apps.acme.unwrap();
        assert_eq!(acme.directory, crate::domains::acme::LETS_ENCRYPT_STAGING);
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.extra_roots_pem.as_deref(), Some(ca.as_str()));
        let wildcard = c.apps.apps_wildcard.unwrap();
        assert_eq!(wildcard.0, cert.chain_pem);
        assert!(!format!("{:?}", wildcard.1).contains("PRIVATE"));

        let bad = |args: ServeArgs, env: &[(&str, &str)], names: &str| {
            let err = ServeConfig::resolve(&args, &env_of(env)).unwrap_err();
            assert!(err.contains(names), "{err}");
        };
        bad(
            ServeArgs {
                acme_directory: Some("http://ca.example/dir".into()),
                ..ServeArgs::default()
            },
            &[],
            "--acme-directory",
        );
        bad(
            ServeArgs::default(),
            &[("ELIZA_CLOUD_ACME_EMAIL", "ops@example.com")],
            "needs --acme-directory",
        );
        bad(
            ServeArgs {
                acme_directory: Some("letsencrypt".into()),
                acme_email: Some("not an address".into()),
                ..ServeArgs::default()
            },
            &[],
            "--acme-email",
        );
        bad(
            ServeArgs {
                acme_directory: Some("letsencrypt".into()),
                acme_ca: Some(path(&key)),
                ..ServeArgs::default()
            },
            &[],
            "--acme-ca",
        );
        bad(
            ServeArgs {
                acme_directory: Some("letsencrypt".into()),
                acme_ca: Some(path(&dir.path().join("missing.pem"))),
                ..ServeArgs::default()
            },
            &[],
            "cannot read",
        );
        bad(
            ServeArgs {
                apps_wildcard_cert: Some(path(&chain)),
                ..ServeArgs::default()
            },
            &[],
            "--apps-wildcard-cert and --apps-wildcard-key go together",
        );
        bad(
            ServeArgs {
                apps_wildcard_cert: Some(path(&chain)),
                apps_wildcard_key: Some(path(&root)),
                ..ServeArgs::default()
            },
            &[],
            "--apps-wildcard-cert",
        );
    }

    #[test]
    fn defaults_on_a_fresh_machine() {
        let c = ServeConfig::resolve(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.public_url.url, DEFAULT_PUBLIC_URL);
        assert_eq!(c.public_url.host, "localhost:3000");
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(!c.trust_proxy);
        assert!(c.bootstrap_key.is_none());
        assert_eq!(c.initial_free_credits_micros, 5_000_000);
    }

    #[test]
    fn initial_free_credits_by_flag_or_either_variable() {
        let c = ServeConfig::resolve(
            &ServeArgs::default(),
            &env_of(&[("INITIAL_FREE_CREDITS", "0")]),
        )
        .unwrap();
        assert_eq!(c.initial_free_credits_micros, 0);
        let env = env_of(&[
            ("INITIAL_FREE_CREDITS", "0"),
            ("ELIZA_CLOUD_INITIAL_FREE_CREDITS", "2.5"),
        ]);
        let c = ServeConfig::resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(c.initial_free_credits_micros, 2_500_000);
        let args = ServeArgs {
            initial_free_credits: Some("-1".into()),
            ..ServeArgs::default()
        };
        let err = ServeConfig::resolve(&args, &env_of(&[])).unwrap_err();
        assert!(err.contains("--initial-free-credits"), "{err}");
    }

    #[test]
    fn env_fills_in_and_flags_win() {
        let env = env_of(&[
            ("ELIZA_CLOUD_LISTEN", "0.0.0.0:8080"),
            ("ELIZA_CLOUD_PUBLIC_URL", "https://Cloud.Example.com/"),
            ("ELIZA_CLOUD_LOG_FORMAT", "json"),
            ("ELIZA_CLOUD_MAX_CONNECTIONS", "7"),
            ("ELIZA_CLOUD_TRUST_PROXY", "true"),
            ("ELIZA_CLOUD_HEADER_TIMEOUT", "250ms"),
            ("ELIZA_CLOUD_DATA", "/var/lib/x"),
        ]);
        let c = ServeConfig::resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.public_url.origin, "https://cloud.example.com");
        assert!(c.public_url.https);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.max_connections, 7);
        assert!(c.trust_proxy);
        assert_eq!(c.header_timeout, Duration::from_millis(250));
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        let args = ServeArgs {
            listen: Some("127.0.0.1:9".into()),
            log_format: Some("plain".into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(&args, &env).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9");
        assert_eq!(c.log_format, LogFormat::Plain);
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = ServeConfig::resolve(
            &ServeArgs::default(),
            &env_of(&[("ELIZA_CLOUD_LISTEN", "nowhere")]),
        )
        .unwrap_err();
        assert!(err.contains("ELIZA_CLOUD_LISTEN"), "{err}");
        let args = ServeArgs {
            max_connections: Some("0".into()),
            ..ServeArgs::default()
        };
        let err = ServeConfig::resolve(&args, &env_of(&[])).unwrap_err();
        assert!(err.contains("--max-connections"), "{err}");
    }

    #[test]
    fn malformed_bootstrap_key_is_refused_without_echo() {
        let secret = "ek_live_notarealkeyatallbutsecret";
        let err = ServeConfig::resolve(
            &ServeArgs::default(),
            &env_of(&[(BOOTSTRAP_KEY_ENV, secret)]),
        )
        .unwrap_err();
        assert!(err.contains(BOOTSTRAP_KEY_ENV));
        assert!(!err.contains(secret));
    }

    #[test]
    fn public_url_forms() {
        let u = PublicUrl::parse("http://localhost:3000").unwrap();
        assert_eq!(
            (u.origin.as_str(), u.host.as_str()),
            ("http://localhost:3000", "localhost:3000")
        );
        let u = PublicUrl::parse("https://x.io/base/").unwrap();
        assert_eq!(u.url, "https://x.io/base");
        assert_eq!(u.origin, "https://x.io");
        for bad in [
            "ftp://x",
            "http://",
            "http://u@x",
            "http://x/?q",
            "localhost:3000",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_flags() {
        let c = ServeConfig::resolve(&ServeArgs::default(), &env_of(&[])).unwrap();
        assert!(!c.gateway.models.uses_upstream());
        let env = env_of(&[
            ("ELIZA_CLOUD_UPSTREAM_URL", "https://api.openai.com/v1"),
            ("ELIZA_CLOUD_UPSTREAM_KEY", "sk-secret-value"),
            ("ELIZA_CLOUD_MARKUP_PERCENT", "25"),
            ("ELIZA_CLOUD_DEBIT_COMMIT", "per-call"),
        ]);
        let c = ServeConfig::resolve(&ServeArgs::default(), &env).unwrap();
        assert!(
            c.gateway.models.uses_upstream(),
            "built-in models go upstream"
        );
        assert_eq!(c.gateway.markup_percent, 25);
        assert!(
            !format!("{c:?}").contains("sk-secret-value"),
            "Debug redacts the key"
        );
        for (var, value) in [
            ("ELIZA_CLOUD_MARKUP_PERCENT", "1001"),
            ("ELIZA_CLOUD_UPSTREAM_TIMEOUT", "soon"),
            ("ELIZA_CLOUD_DEBIT_COMMIT", "sometimes"),
            ("ELIZA_CLOUD_MODELS", "/nonexistent/models.toml"),
        ] {
            let err =
                ServeConfig::resolve(&ServeArgs::default(), &env_of(&[(var, value)])).unwrap_err();
            assert!(err.contains(var), "{err}");
        }
        let err = ServeConfig::resolve(
            &ServeArgs::default(),
            &env_of(&[(
                "ELIZA_CLOUD_UPSTREAM_URL",
                "https://user:sk-in-url@api.example.com/v1",
            )]),
        )
        .unwrap_err();
        assert!(!err.contains("sk-in-url"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("models.json");
        std::fs::write(
            &file,
            r#"{"models": [{"id": "x", "kind": "chat", "provider": "dev"}]}"#,
        )
        .unwrap();
        let err = ServeConfig::resolve(
            &ServeArgs::default(),
            &env_of(&[("ELIZA_CLOUD_MODELS", file.to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(
            err.contains("entry 1 (id \"x\")") && err.contains("input_price_micros_per_million"),
            "{err}"
        );
        // trust-signature settlement cannot buy upstream calls.
        let args = ServeArgs {
            x402_pay_to: Some("0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into()),
            x402_settlement: Some("trust-signature".into()),
            upstream_url: Some("http://127.0.0.1:9/v1".into()),
            ..ServeArgs::default()
        };
        let err = ServeConfig::resolve(&args, &env_of(&[])).unwrap_err();
        assert!(err.contains("trust-signature"), "{err}");
    }

    #[test]
    fn durations_and_bools() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        for bad in ["", "0s", "-1s", "1h", "1.5s", "99999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }
}
