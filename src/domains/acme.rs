//! The `acme` issuer (SPEC §11): certificates for verified domains (and the public URL's host)
//! from an RFC 8555 CA, by the HTTP-01 challenge, through instant-acme.
//!
//! - **The work queue** is `acme_pending_v1` (name → [`Pending`]): a name is put there in the
//!   transaction that verified it (or at start, or when its certificate is due for renewal) and
//!   leaves it in the transaction that stores its certificate. Deleting the domain removes the
//!   row, so a certificate that arrives afterwards is dropped. A restart reissues nothing: what
//!   has a fresh certificate has no row.
//! - **A pass** ([`run_pass`]) orders, one at a time, every row whose next attempt is due at the
//!   server's clock: the challenge's key authorization is put in memory (answered on every host at
//!   `/.well-known/acme-challenge/<token>` by the plain listener, [`Acme::answer`]), the CA is told
//!   to validate, the order finalized with a CSR for a fresh P-256 key, the chain fetched. A
//!   failure is recorded on the row with the next attempt after a backoff ([`backoff_millis`]);
//!   nothing is ever given up. Passes run at start, after a verify, and every minute.
//! - **Public CAs' limits**: no name is ordered unless it is verified (or is the public host), a
//!   failed name waits at least 5 minutes, and at most [`ORDER_BUDGET`] orders go out per
//!   [`ORDER_WINDOW_MILLIS`] (Let's Encrypt allows 300 new orders per account per 3 hours).
//! - **The account** is made on the first order and its credentials (the P-256 key included)
//!   kept in `secrets_v1` under the directory's URL; they are never logged.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;

use super::certs::{CertRecord, all_certs, put_cert};
use crate::state::AppState;
use crate::store::tables::{ACME_PENDING, SECRETS};
use crate::store::{ReadTx, StoreError, codec};

/// Let's Encrypt's production directory, `--acme-directory letsencrypt`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory, `--acme-directory letsencrypt-staging`.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Most orders per window (below Let's Encrypt's 300 new orders per account per 3 hours).
pub const ORDER_BUDGET: usize = 250;
pub const ORDER_WINDOW_MILLIS: i64 = 3 * 3_600_000;
/// The longest one order may take, all its requests and polls included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the CA may take to validate, and to issue once finalized.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// `--acme-directory`, `--acme-email`, `--acme-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The directory's URL (https).
    pub directory: String,
    /// The account's contact, `mailto:` added.
    pub email: Option<String>,
    /// Extra roots (PEM) trusted for the directory's own TLS, beside the Mozilla roots.
    pub extra_roots_pem: Option<String>,
}

impl AcmeConfig {
    /// The directory URL of `--acme-directory` (an https URL, or `letsencrypt`,
    /// `letsencrypt-staging`).
    pub fn directory_of(text: &str) -> Result<String, String> {
        let text = text.trim();
        match text {
            "letsencrypt" => return Ok(LETS_ENCRYPT.into()),
            "letsencrypt-staging" => return Ok(LETS_ENCRYPT_STAGING.into()),
            _ => {}
        }
        let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(format!(
                "{text:?} is not an https URL (RFC 8555 directories are served over HTTPS), nor letsencrypt or letsencrypt-staging"
            ));
        }
        Ok(text.to_string())
    }
}

/// A name waiting for its certificate. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// When it was wanted.
    pub since: i64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Not ordered before this (the backoff after a failure).
    pub next_attempt: i64,
    /// What the last failed attempt said.
    pub last_error: Option<String>,
}

/// The wait after the `failures`-th failure in a row: 5 min, 30 min, 2 h, 6 h, then a day.
pub fn backoff_millis(failures: u32) -> i64 {
    const MINUTE: i64 = 60_000;
    match failures {
        0 => 0,
        1 => 5 * MINUTE,
        2 => 30 * MINUTE,
        3 => 120 * MINUTE,
        4 => 360 * MINUTE,
        _ => 1_440 * MINUTE,
    }
}

/// Whether a public CA can issue for `host`: a DNS name, not an IP literal nor `localhost`.
pub fn orderable(host: &str) -> bool {
    host.contains('.')
        && host.parse::<std::net::IpAddr>().is_err()
        && host != "localhost"
        && !host.ends_with(".localhost")
        && !host.starts_with('[')
}

/// Puts `name` in the queue (due now) unless it is there already.
pub fn want(txn: &WriteTransaction, name: &str, now: i64) -> Result<(), StoreError> {
    let mut table = txn.open_table(ACME_PENDING)?;
    if table.get(name)?.is_some() {
        return Ok(());
    }
    let row = Pending {
        since: now,
        failures: 0,
        next_attempt: now,
        last_error: None,
    };
    table.insert(name, codec::encode(&row)?.as_slice())?;
    Ok(())
}

pub fn pending_of(txn: &impl ReadTx, name: &str) -> Result<Option<Pending>, StoreError> {
    match txn.read_table(ACME_PENDING)?.get(name)? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    }
}

/// Takes `name` out of the queue (its certificate arrived, or it is no longer served).
pub fn forget(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    txn.open_table(ACME_PENDING)?.remove(name)?;
    Ok(())
}

/// Empties the queue (the `local` issuer covers every name).
pub fn forget_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACME_PENDING)?.retain(|_, _| false)?;
    Ok(())
}

pub fn all_pending(txn: &impl ReadTx) -> Result<Vec<(String, Pending)>, StoreError> {
    let mut out = Vec::new();
    for row in txn.read_table(ACME_PENDING)?.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_string(), codec::decode(v.value())?));
    }
    Ok(out)
}

/// Records a failed attempt on the row, if it is still there.
fn record_failure(
    txn: &WriteTransaction,
    name: &str,
    error: &str,
    now: i64,
) -> Result<Option<Pending>, StoreError> {
    let Some(mut row) = pending_of(txn, name)? else {
        return Ok(None);
    };
    row.failures = row.failures.saturating_add(1);
    row.next_attempt = now.saturating_add(backoff_millis(row.failures));
    row.last_error = Some(error.chars().take(500).collect());
    txn.open_table(ACME_PENDING)?
        .insert(name, codec::encode(&row)?.as_slice())?;
    Ok(Some(row))
}

/// The `acme` certificates due for renewal at `now` that are not queued yet (a read: the
/// minute's pass writes nothing when nothing is due).
fn renewals_due(txn: &impl ReadTx, now: i64) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for (name, cert) in all_certs(txn)? {
        if cert.acme_directory().is_some()
            && cert.needs_renewal(now)
            && pending_of(txn, &name)?.is_none()
        {
            names.push(name);
        }
    }
    Ok(names)
}

/// The queue's rows due at `now`, after the `acme` certificates due for renewal joined it.
fn due(txn: &WriteTransaction, now: i64) -> Result<Vec<String>, StoreError> {
    for name in renewals_due(txn, now)? {
        want(txn, &name, now)?;
    }
    due_rows(txn, now)
}

/// The queue's rows due at `now`, oldest wait first.
fn due_rows(txn: &impl ReadTx, now: i64) -> Result<Vec<String>, StoreError> {
    let mut rows = all_pending(txn)?;
    rows.retain(|(_, p)| p.next_attempt <= now);
    rows.sort_by_key(|(_, p)| (p.next_attempt, p.since));
    Ok(rows.into_iter().map(|(name, _)| name).collect())
}

/// Orders sent in the last window, oldest first: at most [`ORDER_BUDGET`].
#[derive(Debug, Default)]
pub struct OrderBudget {
    sent: VecDeque<i64>,
}

impl OrderBudget {
    /// Takes one order from the budget at `now`, if any is left.
    pub fn take(&mut self, now: i64) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| *t <= now.saturating_sub(ORDER_WINDOW_MILLIS))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= ORDER_BUDGET {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

type AcmeHttp = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// The issuer's live parts: the CA client, the challenge answers, the account, the pass lock.
pub struct Acme {
    config: AcmeConfig,
    http: AcmeHttp,
    /// Token → key authorization, while an order waits for its validation.
    challenges: RwLock<HashMap<String, String>>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
    budget: Mutex<OrderBudget>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.config.directory)
            .finish_non_exhaustive()
    }
}

/// The roots of `pem` (for `--acme-ca`), checked.
pub fn roots_of(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let roots: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "is not PEM".to_string())?;
    if roots.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(roots)
}

impl Acme {
    pub fn new(config: AcmeConfig) -> Result<Acme, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(pem) = &config.extra_roots_pem {
            for root in roots_of(pem).map_err(|e| format!("--acme-ca {e}"))? {
                roots
                    .add(root)
                    .map_err(|e| format!("--acme-ca is not a usable root: {e}"))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut connect = hyper_util::client::legacy::connect::HttpConnector::new();
        connect.enforce_http(false);
        connect.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(connect);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Acme {
            config,
            http,
            challenges: RwLock::default(),
            account: tokio::sync::Mutex::new(None),
            pass: tokio::sync::Mutex::new(()),
            budget: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        })
    }

    pub fn directory(&self) -> &str {
        &self.config.directory
    }

    /// The key authorization for an HTTP-01 token, while its order waits.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.challenges.read().ok()?.get(token).cloned()
    }

    /// Starts a pass soon (after a verify).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for [`Acme::wake`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    fn account_secret(&self) -> String {
        format!("acme_account:{}", self.config.directory)
    }

    /// The account: loaded from the database, else registered and stored.
    async fn account(&self, state: &AppState) -> Result<Account, String> {
        let mut held = self.account.lock().await;
        if let Some(account) = held.as_ref() {
            return Ok(account.clone());
        }
        let secret = self.account_secret();
        let stored = {
            let secret = secret.clone();
            state
                .store
                .read_blocking(move |txn| {
                    Ok::<_, StoreError>(
                        txn.read_table(SECRETS)?
                            .get(secret.as_str())?
                            .map(|v| v.value().to_vec()),
                    )
                })
                .await
                .map_err(|e| e.to_string())?
        };
        let builder = Account::builder_with_http(Box::new(self.http.clone()));
        let account = match stored {
            Some(bytes) => {
                let credentials: AccountCredentials = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("the stored ACME account is unreadable: {e}"))?;
                builder
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("the ACME directory is unreachable: {e}"))?
            }
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("registering the ACME account failed: {e}"))?;
                let bytes = serde_json::to_vec(&credentials).map_err(|e| e.to_string())?;
                state
                    .store
                    .write_blocking(move |txn| {
                        txn.open_table(SECRETS)?
                            .insert(secret.as_str(), bytes.as_slice())?;
                        Ok::<_, StoreError>(())
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::info!(directory = %self.config.directory, "ACME account registered");
                account
            }
        };
        *held = Some(account.clone());
        Ok(account)
    }

    /// One order for `name`, to its certificate.
    async fn order(&self, account: &Account, name: &str) -> Result<CertRecord, String> {
        let identifiers = [Identifier::Dns(name.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("the CA refused the order: {e}"))?;
        let mut tokens = Tokens {
            acme: self,
            tokens: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| e.to_string())?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("the authorization is {other:?}")),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or("the CA offers no http-01 challenge")?;
            tokens.put(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("the challenge was refused: {e}"))?;
        }
        let status = order
            .poll_ready(&POLL)
            .await
            .map_err(|e| format!("validation failed: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "validation failed: {}",
                why_invalid(&mut order).await
            ));
        }
        drop(tokens);
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let csr = rcgen::CertificateParams::new(vec![name.to_string()])
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| e.to_string())?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalizing failed: {e}"))?;
        let chain = order
            .poll_certificate(&POLL)
            .await
            .map_err(|e| format!("the certificate did not arrive: {e}"))?;
        let (not_before, not_after) = validity(&chain)?;
        let cert = CertRecord {
            chain_pem: chain,
            key_pem: key.serialize_pem(),
            not_before,
            not_after,
            issuer: format!("acme:{}", self.config.directory),
        };
        super::certs::certified_key(&cert)?;
        Ok(cert)
    }
}

/// The challenge answers an order put up, taken down when it ends however it ends.
struct Tokens<'a> {
    acme: &'a Acme,
    tokens: Vec<String>,
}

impl Tokens<'_> {
    fn put(&mut self, token: String, answer: String) {
        if let Ok(mut map) = self.acme.challenges.write() {
            map.insert(token.clone(), answer);
        }
        self.tokens.push(token);
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.acme.challenges.write() {
            for token in &self.tokens {
                map.remove(token);
            }
        }
    }
}

/// What the CA said about an invalid order's challenges.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(problem.to_string());
            }
        }
    }
    if reasons.is_empty() {
        "the order is invalid".into()
    } else {
        reasons.join("; ")
    }
}

/// The leaf's validity (milliseconds), from the first certificate of a PEM chain.
pub fn validity(chain_pem: &str) -> Result<(i64, i64), String> {
    use rustls::pki_types::pem::PemObject;
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("the chain holds no certificate")?
        .map_err(|_| "the chain is not PEM".to_string())?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let v = parsed.validity();
    Ok((
        v.not_before.timestamp().saturating_mul(1000),
        v.not_after.timestamp().saturating_mul(1000),
    ))
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Names ordered.
    pub attempted: Vec<String>,
    /// Names whose certificate was stored and is served.
    pub issued: Vec<String>,
    /// Names that failed, with why.
    pub failed: Vec<(String, String)>,
    /// Names left for the next window (the order budget was spent).
    pub deferred: usize,
}

/// Orders every queued name due at the server's clock now, one at a time; stores and serves
/// what arrives; records failures with their backoff. One pass at a time: a caller waits for
/// the running one, then runs its own.
pub async fn run_pass(state: &Arc<AppState>) -> Pass {
    let mut pass = Pass::default();
    let Some(acme) = state.acme.clone() else {
        return pass;
    };
    let _one = acme.pass.lock().await;
    let now = state.now().millis();
    let read = state
        .store
        .read_blocking(move |txn| {
            Ok::<_, StoreError>((renewals_due(txn, now)?.is_empty(), due_rows(txn, now)?))
        })
        .await;
    let names = match read {
        // Nothing to renew: the queue's due rows as read, with no write transaction.
        Ok((true, names)) => Ok(names),
        Ok((false, _)) => state.store.write_blocking(move |txn| due(txn, now)).await,
        Err(e) => Err(e),
    };
    let names = match names {
        Ok(names) => names,
        Err(e) => {
            tracing::error!(error = %e, "reading the certificate queue failed; will retry");
            return pass;
        }
    };
    if names.is_empty() {
        return pass;
    }
    let account = match acme.account(state).await {
        Ok(account) => account,
        Err(e) => {
            tracing::error!(error = %e, "the ACME account is unavailable; will retry");
            for name in names {
                failed(state, &mut pass, name, e.clone()).await;
            }
            return pass;
        }
    };
    for name in names {
        let allowed = acme
            .budget
            .lock()
            .map(|mut b| b.take(state.now().millis()))
            .unwrap_or(false);
        if !allowed {
            pass.deferred += 1;
            continue;
        }
        // Still queued? A name deleted since the pass began is not ordered (SPEC §11: only
        // verified names are).
        let key = name.clone();
        let queued = state
            .store
            .read_blocking(move |txn| pending_of(txn, &key))
            .await;
        if !matches!(queued, Ok(Some(_))) {
            continue;
        }
        pass.attempted.push(name.clone());
        let ordered = tokio::time::timeout(ORDER_TIMEOUT, acme.order(&account, &name))
            .await
            .unwrap_or_else(|_| Err("the order took longer than 180 s".into()));
        match ordered {
            Ok(cert) => stored(state, &mut pass, name, cert).await,
            Err(e) => failed(state, &mut pass, name, e).await,
        }
    }
    pass
}

/// Stores an arrived certificate and serves it, unless its name left the queue meanwhile.
async fn stored(state: &Arc<AppState>, pass: &mut Pass, name: String, cert: CertRecord) {
    let certs = state.certs.clone();
    let key = name.clone();
    let kept = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            if pending_of(txn, &key)?.is_none() {
                return Ok::<_, StoreError>(false);
            }
            put_cert(txn, &key, &cert)?;
            forget(txn, &key)?;
            on_commit.push(move || certs.insert(key, &cert));
            Ok(true)
        })
        .await;
    match kept {
        Ok(true) => {
            tracing::info!(name = %name, "certificate issued by the ACME CA");
            pass.issued.push(name);
        }
        Ok(false) => {
            tracing::info!(name = %name, "certificate dropped: the name is no longer served")
        }
        // The row stays queued with a backoff, so a failing store does not order every minute.
        Err(e) => {
            failed(
                state,
                pass,
                name,
                format!("storing the certificate failed: {e}"),
            )
            .await
        }
    }
}

async fn failed(state: &Arc<AppState>, pass: &mut Pass, name: String, error: String) {
    let now = state.now().millis();
    let key = name.clone();
    let why = error.clone();
    let row = state
        .store
        .write_blocking(move |txn| record_failure(txn, &key, &why, now))
        .await;
    match row {
        Ok(Some(row)) => tracing::warn!(
            name = %name,
            error = %error,
            failures = row.failures,
            retry_in_s = backoff_millis(row.failures) / 1000,
            "certificate order failed"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(name = %name, error = %e, "recording a failed order failed"),
    }
    pass.failed.push((name, error));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays_at_a_day() {
        let waits: Vec<i64> = (0..8).map(backoff_millis).collect();
        assert_eq!(waits[0], 0);
        assert_eq!(waits[1], 300_000);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(waits[7], 86_400_000);
        assert_eq!(backoff_millis(u32::MAX), 86_400_000);
    }

    #[test]
    fn the_order_budget_holds_per_window() {
        let mut budget = OrderBudget::default();
        for i in 0..ORDER_BUDGET {
            assert!(budget.take(i as i64));
        }
        assert!(!budget.take(1_000));
        assert!(!budget.take(ORDER_WINDOW_MILLIS - 1));
        // The first order leaves the window: one more may go.
        assert!(budget.take(ORDER_WINDOW_MILLIS));
        assert!(!budget.take(ORDER_WINDOW_MILLIS));
    }

    #[test]
    fn only_dns_names_are_orderable() {
        for host in ["example.com", "api.example.test"] {
            assert!(orderable(host), "{host}");
        }
        for host in [
            "localhost",
            "a.localhost",
            "127.0.0.1",
            "::1",
            "[::1]",
            "intranet",
        ] {
            assert!(!orderable(host), "{host}");
        }
    }

    #[test]
    fn directories_are_https_urls_or_lets_encrypt() {
        assert_eq!(
            AcmeConfig::directory_of("letsencrypt").unwrap(),
            LETS_ENCRYPT
        );
        assert_eq!(
            AcmeConfig::directory_of(" letsencrypt-staging ").unwrap(),
            LETS_ENCRYPT_STAGING
        );
        assert!(AcmeConfig::directory_of("https://127.0.0.1:14000/dir").is_ok());
        for bad in [
            "http://ca.example/dir",
            "ca.example",
            "",
            "https://",
            "ftp://x/y",
        ] {
            assert!(AcmeConfig::directory_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_queue_keeps_one_row_per_name_and_records_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path()).unwrap();
        store
            .write(|txn| {
                want(txn, "shop.example.com", 10)?;
                want(txn, "shop.example.com", 20)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let row = store
            .read(|txn| pending_of(txn, "shop.example.com"))
            .unwrap()
            .unwrap();
        assert_eq!((row.since, row.next_attempt, row.failures), (10, 10, 0));
        let failed = store
            .write(|txn| record_failure(txn, "shop.example.com", "no answer", 100))
            .unwrap()
            .unwrap();
        assert_eq!(failed.failures, 1);
        assert_eq!(failed.next_attempt, 100 + 300_000);
        assert_eq!(failed.last_error.as_deref(), Some("no answer"));
        assert!(store.write(|txn| due(txn, 200)).unwrap().is_empty());
        assert_eq!(
            store.write(|txn| due(txn, 300_100)).unwrap(),
            vec!["shop.example.com".to_string()]
        );
        store.write(|txn| forget(txn, "shop.example.com")).unwrap();
        assert!(
            store
                .write(|txn| record_failure(txn, "shop.example.com", "x", 1))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn validity_is_read_from_the_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let cert = store
            .write(|txn| {
                super::super::certs::issue_local(txn, &["a.example.com".into()], 86_400_000 * 1000)
            })
            .unwrap();
        let (nb, na) = validity(&cert.chain_pem).unwrap();
        assert_eq!((nb, na), (cert.not_before, cert.not_after));
        assert!(validity("not pem").is_err());
        assert!(validity("").is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_budget_never_lets_more_than_its_share_into_any_window(
            gaps in proptest::collection::vec(0i64..120_000, 1..800),
        ) {
            let mut budget = OrderBudget::default();
            let mut now = 0i64;
            let mut taken = Vec::new();
            for gap in gaps {
                now += gap;
                if budget.take(now) {
                    taken.push(now);
                }
            }
            for (i, start) in taken.iter().enumerate() {
                let inside = taken[i..].iter().take_while(|t| **t < start + ORDER_WINDOW_MILLIS).count();
                proptest::prop_assert!(inside <= ORDER_BUDGET);
            }
        }

        #[test]
        fn backoff_never_shrinks_and_never_waits_less_than_five_minutes(n in 1u32..u32::MAX) {
            proptest::prop_assert!(backoff_millis(n) >= 300_000);
            proptest::prop_assert!(backoff_millis(n) <= backoff_millis(n.saturating_add(1)));
        }

        #[test]
        fn validity_never_panics_on_any_text(text in ".{0,400}") {
            let _ = validity(&text);
            let _ = AcmeConfig::directory_of(&text);
            let _ = orderable(&text);
        }
    }
}
