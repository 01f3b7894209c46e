//! Every redb table the appliance keeps, in one place. The names carry a version: a table whose key
//! or value layout changes gets a new name and a migration, never an in-place reinterpretation.
//!
//! Values of type `&[u8]` hold one record encoded by [`super::codec`]; ids are UUIDs as `u128`.

use redb::TableDefinition;

/// Metadata: `schema_version` (see `migrations.rs`) and `bootstrapped` (1 once the operator
/// account exists, so a later start never creates or prints another key).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");

/// Organization id → `OrgRecord`.
pub const ORGS: TableDefinition<u128, &[u8]> = TableDefinition::new("orgs_v1");

/// Organization slug → organization id. Enforces unique slugs.
pub const ORG_SLUGS: TableDefinition<&str, u128> = TableDefinition::new("org_slugs_v1");

/// User id → `UserRecord`.
pub const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users_v1");

/// Lowercase EVM address or base58 Solana address → user id. Enforces one account per wallet.
pub const USER_WALLETS: TableDefinition<&str, u128> = TableDefinition::new("user_wallets_v1");

/// API key id → `ApiKeyRecord` (display prefix and sha256 only, never the plaintext).
pub const API_KEYS: TableDefinition<u128, &[u8]> = TableDefinition::new("api_keys_v1");

/// sha256(plaintext key) → API key id: the only way a presented key is found.
pub const API_KEY_HASHES: TableDefinition<&[u8; 32], u128> =
    TableDefinition::new("api_key_hashes_v1");

/// (organization id, API key id) → nothing: an organization's keys found by a range scan
/// instead of a scan of every key. Kept in the transaction of every insert and delete. Schema 5.
pub const API_KEYS_BY_ORG: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("api_keys_by_org_v1");

/// sha256(session token) → `SessionRecord`.
pub const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions_v1");

/// (organization id, sequence number) → `LedgerEntry`. Sequence numbers start at 1 per
/// organization and only grow, so a range scan is the organization's history in order.
pub const LEDGER: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("ledger_v1");

/// Idempotency key → the (organization id, sequence number) of the one entry that used it.
pub const LEDGER_IDEMPOTENCY: TableDefinition<&str, (u128, u64)> =
    TableDefinition::new("ledger_idempotency_v1");

/// Organization id → balance in micro-dollars; always the sum of that organization's ledger rows,
/// maintained in the same transaction as every row (checked by `eliza-cloud check`).
pub const BALANCES: TableDefinition<u128, i64> = TableDefinition::new("balances_v1");

/// (organization id, day since the epoch) → authenticated requests that day. Schema 2.
pub const USAGE_DAILY: TableDefinition<(u128, i64), u64> = TableDefinition::new("usage_daily_v1");

/// (signed timestamp in ms, mark) → nothing: wallet-signature requests already accepted (SPEC §6).
/// The mark is sha256 over (address, timestamp, method, path, payload hash). Rows whose timestamp
/// is out of the ±5 minute window can never match again and are pruned. Schema 3.
pub const WALLET_REPLAY: TableDefinition<(i64, &[u8; 32]), ()> =
    TableDefinition::new("wallet_replay_v1");

/// `x402:<network>:<payer>:<nonce>` → `PaymentRecord`: every x402 authorization that credited an
/// organization, written in the same transaction as the credit (whose idempotency key is the same
/// string), so an authorization never credits twice. Schema 4.
pub const X402_AUTHORIZATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("x402_authorizations_v1");

/// `x402:<network>:<payer>:<nonce>` → `SettlementRecord`: the settlement journal (SPEC §7). A
/// record is committed before `/settle` is sent and removed in the transaction that credits
/// (or once the facilitator refused); one that stays is a settlement whose outcome is unknown,
/// for the operator to resolve (`eliza-cloud payments`). Schema 6.
pub const X402_SETTLEMENTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("x402_settlements_v1");

/// Name → secret bytes the server keeps (the sign-in nonce MAC key). Never logged, never in an
/// answer. Schema 6.
pub const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets_v1");

/// (organization id, day since the epoch, dimension, name) → `UsageTotals`: the metered calls'
/// aggregates (SPEC §9, §12), written by the usage flusher at least every second. The dimension
/// says what `name` is (`store::usage::Dimension`): the organization's total (name empty), a key
/// id, an app id, an app's end user (`<app id>/<user id>`), a model id, or an endpoint. Schema 7.
pub const USAGE_METERED: TableDefinition<(u128, i64, u8, &str), &[u8]> =
    TableDefinition::new("usage_metered_v1");

/// Batch id → nothing: the marker of a committed batch of metered debits, written in the batch's
/// own transaction so a reader can tell from its snapshot whether the batch is in the balance it
/// read (`gateway::billing`). Markers of batches no longer in flight are removed by later
/// batches. Schema 7.
pub const DEBIT_BATCHES: TableDefinition<u128, ()> = TableDefinition::new("debit_batches_v1");

/// App id → `AppRecord` (SPEC §10). Schema 8.
pub const APPS: TableDefinition<u128, &[u8]> = TableDefinition::new("apps_v1");

/// App slug → app id: slugs are unique across the appliance. Schema 8.
pub const APP_SLUGS: TableDefinition<&str, u128> = TableDefinition::new("app_slugs_v1");

/// Subdomain label → app id: one app per label under the apps domain. Schema 8.
pub const APP_SUBDOMAINS: TableDefinition<&str, u128> = TableDefinition::new("app_subdomains_v1");

/// (organization id, app id) → nothing: an organization's apps by a range scan. Schema 8.
pub const APPS_BY_ORG: TableDefinition<(u128, u128), ()> = TableDefinition::new("apps_by_org_v1");

/// (app id, end user id) → `AppUserTotals`: first and last seen, requests and cost of each end
/// user of an app (SPEC §10), written by the usage flusher. Schema 8.
pub const APP_USERS: TableDefinition<(u128, &str), &[u8]> = TableDefinition::new("app_users_v1");

/// (app id, created at in ms, call id) → micro-dollars: one row per monetized call through an app
/// (SPEC §10), written in the transaction of the caller's debit it comes from. Schema 9.
pub const EARNINGS: TableDefinition<(u128, i64, u128), i64> = TableDefinition::new("earnings_v1");

/// (app id, day since the epoch) → `EarningsDay`: an app's earnings by day, for its history.
/// Schema 9.
pub const EARNINGS_DAILY: TableDefinition<(u128, i64), &[u8]> =
    TableDefinition::new("earnings_daily_v1");

/// App id → `EarningsTotals`: what an app earned and what was withdrawn, beside its rows.
/// Schema 9.
pub const EARNINGS_TOTALS: TableDefinition<u128, &[u8]> =
    TableDefinition::new("earnings_totals_v1");

/// (app id, idempotency key) → `Withdrawal`: withdrawals of earnings into the owner's credits.
/// Schema 9.
pub const EARNINGS_WITHDRAWALS: TableDefinition<(u128, &str), &[u8]> =
    TableDefinition::new("earnings_withdrawals_v1");

/// App id → `WebhookRecord`: an app's webhook settings and signing secrets (SPEC §10). The
/// secrets live only here: never logged, never in an answer after the one that made them.
/// Schema 10.
pub const WEBHOOKS: TableDefinition<u128, &[u8]> = TableDefinition::new("webhooks_v1");

/// Delivery id → `DeliveryRecord`: the outbox and the delivery log. Schema 10.
pub const DELIVERIES: TableDefinition<u128, &[u8]> = TableDefinition::new("webhook_deliveries_v1");

/// (app id, created at in ms, delivery id) → nothing: an app's deliveries, newest last. Schema 10.
pub const DELIVERIES_BY_APP: TableDefinition<(u128, i64, u128), ()> =
    TableDefinition::new("webhook_deliveries_by_app_v1");

/// (next attempt at in ms, delivery id) → nothing: the deliveries waiting for an attempt, the
/// earliest first. Schema 10.
pub const DELIVERIES_DUE: TableDefinition<(i64, u128), ()> =
    TableDefinition::new("webhook_deliveries_due_v1");

/// (app id, month as YYYYMM, threshold) → nothing: the `usage.threshold` events already sent, once
/// per threshold per month. Schema 10.
pub const THRESHOLDS_FIRED: TableDefinition<(u128, u32, u64), ()> =
    TableDefinition::new("webhook_thresholds_fired_v1");

/// (app id, last seen in ms, end user id) → nothing: an app's end users, most recently seen
/// last, so `/users` pages without loading them all. Kept with `app_users_v1`. Schema 10.
pub const APP_USERS_SEEN: TableDefinition<(u128, i64, &str), ()> =
    TableDefinition::new("app_users_seen_v1");

/// App id → how many end users it has. Schema 10.
pub const APP_USER_COUNTS: TableDefinition<u128, u64> = TableDefinition::new("app_user_counts_v1");

/// (app id, month as YYYYMM, end user id) → nothing: who used an app in a month (its analytics'
/// `uniqueUsers`). Schema 10 (it replaces the end-user rows of `usage_metered_v1`).
pub const APP_MONTH_USERS: TableDefinition<(u128, u32, &str), ()> =
    TableDefinition::new("app_month_users_v1");

/// (app id, month as YYYYMM) → how many end users used the app that month. Schema 10.
pub const APP_MONTH_USER_COUNTS: TableDefinition<(u128, u32), u64> =
    TableDefinition::new("app_month_user_counts_v1");

/// (domain, app id) → `DomainClaim`: an app's unverified claim on a custom domain, with its TXT
/// token (SPEC §11). Several organizations may claim one name; the first to verify owns it.
/// Schema 11.
pub const DOMAIN_CLAIMS: TableDefinition<(&str, u128), &[u8]> =
    TableDefinition::new("domain_claims_v1");

/// Domain → `DomainRecord`: a verified custom domain and the app it serves. Schema 11.
pub const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains_v1");

/// (app id, domain) → nothing: an app's domains, claimed or verified. Schema 11.
pub const APP_DOMAINS: TableDefinition<(u128, &str), ()> = TableDefinition::new("app_domains_v1");

/// Certificate name (a domain, or `*.<apps domain>`) → `CertRecord`: served certificates with
/// their keys (SPEC §11). Keys are never logged nor answered. Schema 12.
pub const CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates_v1");

/// Name → `acme::Pending`: names waiting for a certificate from the ACME issuer, with their
/// failures and next attempt (SPEC §11). Schema 13.
pub const ACME_PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("acme_pending_v1");

/// sha256(session token) → sha256 of the API key it was exchanged for (SPEC §13): the session
/// lives only while that key does. Schema 14.
pub const SESSION_KEYS: TableDefinition<&[u8; 32], &[u8; 32]> =
    TableDefinition::new("session_keys_v1");
