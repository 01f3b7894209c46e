//! The command line (argh). Every `serve` flag also reads `ELIZA_CLOUD_<FLAG>` (resolved in
//! `config.rs`); the help text below is what `--help` prints, so it names each variable.

use argh::FromArgs;

#[derive(FromArgs, Debug)]
/// eliza-cloud: the self-hosted elizaOS Cloud identity and app layer in one binary.
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(Box<ServeArgs>),
    Keys(KeysArgs),
    Orgs(OrgsArgs),
    Payments(PaymentsArgs),
    Ca(CaArgs),
    Check(CheckArgs),
    Backup(BackupArgs),
    Version(VersionArgs),
}

#[derive(FromArgs, Default, Clone)]
#[argh(subcommand, name = "serve")]
/// run the HTTP server. Every flag can also be set by the environment variable
/// ELIZA_CLOUD_<FLAG> (e.g. --public-url by ELIZA_CLOUD_PUBLIC_URL); a flag wins over its
/// variable. ELIZA_CLOUD_BOOTSTRAP_KEY (environment only) registers that key for the
/// operator on the first start instead of printing a new one.
pub struct ServeArgs {
    /// address to listen on (ELIZA_CLOUD_LISTEN; default 127.0.0.1:3000)
    #[argh(option)]
    pub listen: Option<String>,
    /// data directory, created with mode 0700 (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
    /// URL clients use to reach this server; its host is the SIWE domain and its origin the
    /// CSRF origin (ELIZA_CLOUD_PUBLIC_URL; default http://localhost:3000)
    #[argh(option)]
    pub public_url: Option<String>,
    /// log format: plain or json (ELIZA_CLOUD_LOG_FORMAT; default plain)
    #[argh(option)]
    pub log_format: Option<String>,
    /// log level: error, warn, info, debug or trace (ELIZA_CLOUD_LOG_LEVEL; default info)
    #[argh(option)]
    pub log_level: Option<String>,
    /// most connections served at once; more wait to be accepted
    /// (ELIZA_CLOUD_MAX_CONNECTIONS; default 1024)
    #[argh(option)]
    pub max_connections: Option<String>,
    /// most connections one client address holds at once (an IPv6 /64 is one address); not
    /// applied with --trust-proxy (ELIZA_CLOUD_MAX_CONNECTIONS_PER_ADDRESS; default 64)
    #[argh(option)]
    pub max_connections_per_address: Option<String>,
    /// close a connection (HTTP/1.1 or HTTP/2) with no request in flight for this long
    /// (ELIZA_CLOUD_IDLE_TIMEOUT; default 60s)
    #[argh(option)]
    pub idle_timeout: Option<String>,
    /// trust X-Forwarded-For for the client address, only behind a proxy you run
    /// (ELIZA_CLOUD_TRUST_PROXY=true|false; default false)
    #[argh(switch)]
    pub trust_proxy: bool,
    /// time allowed to send request headers, e.g. 10s or 500ms
    /// (ELIZA_CLOUD_HEADER_TIMEOUT; default 10s)
    #[argh(option)]
    pub header_timeout: Option<String>,
    /// time allowed to send a request body once the server reads it, else 408
    /// (ELIZA_CLOUD_BODY_TIMEOUT; default 30s)
    #[argh(option)]
    pub body_timeout: Option<String>,
    /// time in-flight requests get to finish after SIGINT/SIGTERM
    /// (ELIZA_CLOUD_SHUTDOWN_TIMEOUT; default 10s)
    #[argh(option)]
    pub shutdown_timeout: Option<String>,
    /// largest request body in bytes; larger ones get 413
    /// (ELIZA_CLOUD_MAX_BODY_BYTES; default 1048576)
    #[argh(option)]
    pub max_body_bytes: Option<String>,
    /// sign-up bonus in dollars for a wallet's first sign-in, 0 disables
    /// (ELIZA_CLOUD_INITIAL_FREE_CREDITS, or INITIAL_FREE_CREDITS as the hosted cloud names it;
    /// default 5)
    #[argh(option)]
    pub initial_free_credits: Option<String>,
    /// EVM address that receives x402 payments; unset disables x402 (topups answer 503)
    /// (ELIZA_CLOUD_X402_PAY_TO)
    #[argh(option)]
    pub x402_pay_to: Option<String>,
    /// x402 network by name: base, base-sepolia, or one of --x402-networks
    /// (ELIZA_CLOUD_X402_NETWORK; default base-sepolia)
    #[argh(option)]
    pub x402_network: Option<String>,
    /// more x402 networks, ';'-separated, each
    /// NAME:CHAIN_ID:ASSET:TOKEN_NAME:TOKEN_VERSION:DECIMALS:mainnet|testnet
    /// (ELIZA_CLOUD_X402_NETWORKS)
    #[argh(option)]
    pub x402_networks: Option<String>,
    /// x402 facilitator base URL (http or https): payments are verified and settled there
    /// (ELIZA_CLOUD_X402_FACILITATOR)
    #[argh(option)]
    pub x402_facilitator: Option<String>,
    /// timeout of each facilitator call (ELIZA_CLOUD_X402_FACILITATOR_TIMEOUT; default 15s)
    #[argh(option)]
    pub x402_facilitator_timeout: Option<String>,
    /// PEM file of an extra root certificate for an https facilitator
    /// (ELIZA_CLOUD_X402_FACILITATOR_CA)
    #[argh(option)]
    pub x402_facilitator_ca: Option<String>,
    /// trust-signature: credit verified payments without a chain, test networks only
    /// (ELIZA_CLOUD_X402_SETTLEMENT)
    #[argh(option)]
    pub x402_settlement: Option<String>,
    /// top-up amounts in dollars, comma-separated (ELIZA_CLOUD_X402_TOPUP_AMOUNTS; default
    /// 10,50,100)
    #[argh(option)]
    pub x402_topup_amounts: Option<String>,
    /// model table file, JSON {"models": [...]} or TOML [[models]] (.toml), replacing the
    /// built-in table (ELIZA_CLOUD_MODELS)
    #[argh(option)]
    pub models: Option<String>,
    /// percent added to every model price, 0..1000 (ELIZA_CLOUD_MARKUP_PERCENT; default 0)
    #[argh(option)]
    pub markup_percent: Option<String>,
    /// base URL of an OpenAI-compatible upstream, as an SDK's base_url (e.g.
    /// https://api.openai.com/v1); the built-in models then use it (ELIZA_CLOUD_UPSTREAM_URL)
    #[argh(option)]
    pub upstream_url: Option<String>,
    /// the upstream's API key; prefer the variable ELIZA_CLOUD_UPSTREAM_KEY, which no process
    /// listing shows
    #[argh(option)]
    pub upstream_key: Option<String>,
    /// longest wait for the upstream's answer, and for each next chunk of a stream
    /// (ELIZA_CLOUD_UPSTREAM_TIMEOUT; default 120s)
    #[argh(option)]
    pub upstream_timeout: Option<String>,
    /// when metered debits are committed: grouped (all of each second in one transaction) or
    /// per-call (ELIZA_CLOUD_DEBIT_COMMIT; default grouped)
    #[argh(option)]
    pub debit_commit: Option<String>,
    /// address of the HTTPS listener (HTTP/1.1 and HTTP/2), certificates chosen by SNI
    /// (ELIZA_CLOUD_TLS_LISTEN; default none)
    #[argh(option)]
    pub tls_listen: Option<String>,
    /// PEM certificate chain for the public URL's host (ELIZA_CLOUD_TLS_CERT; default: one from
    /// the local CA)
    #[argh(option)]
    pub tls_cert: Option<String>,
    /// PEM private key for --tls-cert (ELIZA_CLOUD_TLS_KEY)
    #[argh(option)]
    pub tls_key: Option<String>,
    /// PEM certificate chain of a wildcard for the apps domain (ELIZA_CLOUD_APPS_WILDCARD_CERT;
    /// default: one from the local CA)
    #[argh(option)]
    pub apps_wildcard_cert: Option<String>,
    /// PEM private key for --apps-wildcard-cert (ELIZA_CLOUD_APPS_WILDCARD_KEY)
    #[argh(option)]
    pub apps_wildcard_key: Option<String>,
    /// ACME directory for verified domains' certificates: an https URL, letsencrypt or
    /// letsencrypt-staging (ELIZA_CLOUD_ACME_DIRECTORY; default none: the local CA issues)
    #[argh(option)]
    pub acme_directory: Option<String>,
    /// contact email of the ACME account (ELIZA_CLOUD_ACME_EMAIL; default none)
    #[argh(option)]
    pub acme_email: Option<String>,
    /// PEM file of an extra root trusted for the ACME directory's own TLS, as a test CA needs
    /// (ELIZA_CLOUD_ACME_CA; default none)
    #[argh(option)]
    pub acme_ca: Option<String>,
    /// the domain under which every app gets `<slug>.<domain>` (ELIZA_CLOUD_APPS_DOMAIN; default
    /// apps.localhost)
    #[argh(option)]
    pub apps_domain: Option<String>,
    /// how long an app's earning stays pending before it can be withdrawn, e.g. 7d, 12h, 0
    /// (ELIZA_CLOUD_EARNINGS_HOLD; default 7d)
    #[argh(option)]
    pub earnings_hold: Option<String>,
    /// DNS server for webhook targets (and domain checks), as IP:PORT
    /// (ELIZA_CLOUD_DNS_RESOLVER; default the system's resolver)
    #[argh(option)]
    pub dns_resolver: Option<String>,
    /// let webhooks go to private, loopback and link-local addresses, for development only
    /// (ELIZA_CLOUD_ALLOW_PRIVATE_WEBHOOKS=true|false; default false)
    #[argh(switch)]
    pub allow_private_webhooks: bool,
}

/// Written by hand: the flags may hold the upstream key, which no `Debug` may show.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("data", &self.data)
            .field("public_url", &self.public_url)
            .field(
                "upstream_key",
                &self.upstream_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "keys")]
/// manage API keys offline (the server must be stopped)
pub struct KeysArgs {
    #[argh(subcommand)]
    pub command: KeysCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum KeysCommand {
    Generate(KeysGenerateArgs),
    Create(KeysCreateArgs),
    List(KeysListArgs),
    Revoke(KeysRevokeArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "generate")]
/// print a new well-formed key without storing it anywhere (for ELIZA_CLOUD_BOOTSTRAP_KEY)
pub struct KeysGenerateArgs {
    /// key type: live or test (default live)
    #[argh(option, long = "type", default = "String::from(\"live\")")]
    pub key_type: String,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "create")]
/// create a key and print it once to stdout
pub struct KeysCreateArgs {
    /// organization id or slug (default: the operator organization)
    #[argh(option)]
    pub org: Option<String>,
    /// key name (default "CLI key")
    #[argh(option)]
    pub name: Option<String>,
    /// key type: live or test (default live)
    #[argh(option, long = "type", default = "String::from(\"live\")")]
    pub key_type: String,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
/// list keys (prefixes only; secrets are never stored)
pub struct KeysListArgs {
    /// only this organization (id or slug)
    #[argh(option)]
    pub org: Option<String>,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "revoke")]
/// delete a key; it fails on its next use
pub struct KeysRevokeArgs {
    /// key id
    #[argh(positional)]
    pub id: String,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "orgs")]
/// inspect and manage organizations offline (the server must be stopped)
pub struct OrgsArgs {
    #[argh(subcommand)]
    pub command: OrgsCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum OrgsCommand {
    List(OrgsListArgs),
    Show(OrgsShowArgs),
    SetPlan(OrgsSetPlanArgs),
    GrantCredits(OrgsGrantArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
/// list organizations with plan and balance
pub struct OrgsListArgs {
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
/// show one organization, its users, keys and recent ledger rows
pub struct OrgsShowArgs {
    /// organization id or slug
    #[argh(positional)]
    pub org: String,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set-plan")]
/// set an organization's plan: free, pro or enterprise
pub struct OrgsSetPlanArgs {
    /// organization id or slug
    #[argh(positional)]
    pub org: String,
    /// free, pro or enterprise
    #[argh(positional)]
    pub plan: String,
    /// requests per minute for an enterprise organization (1..=100000)
    #[argh(option)]
    pub rate_limit: Option<u32>,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "grant-credits")]
/// add credits to an organization's balance (a ledger credit row)
pub struct OrgsGrantArgs {
    /// organization id or slug
    #[argh(positional)]
    pub org: String,
    /// amount in dollars, up to 6 decimal places (e.g. 25 or 0.5)
    #[argh(positional)]
    pub dollars: String,
    /// ledger description (default "Operator grant")
    #[argh(option)]
    pub description: Option<String>,
    /// idempotency key; running the same grant again with it changes nothing
    /// (default: a new random key)
    #[argh(option)]
    pub idempotency_key: Option<String>,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
/// check the indexes, the ledger invariants and the settlement journal, read-only (never
/// migrates or repairs); exits 1 on any violation or unresolved settlement
pub struct CheckArgs {
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "backup")]
/// write a consistent copy of the database, as it is (never migrated), to a new file
pub struct BackupArgs {
    /// destination file (must not exist)
    #[argh(option)]
    pub out: String,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ca")]
/// the appliance's local certificate authority (SPEC §11)
pub struct CaArgs {
    #[argh(subcommand)]
    pub command: CaCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum CaCommand {
    Export(CaExportArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "export")]
/// print the local CA's certificate (PEM) for clients to trust; made by the first `serve`
pub struct CaExportArgs {
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "payments")]
/// x402 settlements whose outcome is unknown, offline (the server must be stopped)
pub struct PaymentsArgs {
    #[argh(subcommand)]
    pub command: PaymentsCommand,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum PaymentsCommand {
    Pending(PaymentsPendingArgs),
    Resolve(PaymentsResolveArgs),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pending")]
/// list journaled settlements; with no server running every one of them is unknown
pub struct PaymentsPendingArgs {
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "resolve")]
/// finish an unknown settlement: credit (it settled; credits once, under the authorization's
/// idempotency key) or refuse (it did not; nothing is credited)
pub struct PaymentsResolveArgs {
    /// the authorization key, x402:<network>:<payer>:<nonce>, as `payments pending` lists it
    #[argh(positional)]
    pub key: String,
    /// credit or refuse
    #[argh(positional)]
    pub decision: String,
    /// the settlement's transaction hash, if you know it (recorded with the credit)
    #[argh(option)]
    pub transaction: Option<String>,
    /// data directory (ELIZA_CLOUD_DATA; default ./eliza-cloud-data)
    #[argh(option)]
    pub data: Option<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
/// print the version and the database schema version
pub struct VersionArgs {}
