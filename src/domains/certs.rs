//! Certificates (SPEC §11). The `local` issuer: the appliance's own CA (rcgen; its key and
//! certificate in `secrets_v1`), a wildcard for `*.<apps domain>`, one certificate for the public
//! URL's host and one per verified domain, each stored in `certificates_v1` with its key, so a
//! restart serves them again without a reissue. The [`CertMap`] holds them in memory for the
//! TLS listener, chosen by SNI: the exact name, else the wildcard one label up; an unknown name
//! gets no certificate and its handshake is refused. Keys never appear in a log line or an
//! answer; `Debug` of the records redacts them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::store::tables::{CERTIFICATES, SECRETS};
use crate::store::{ReadTx, StoreError, codec};

/// `secrets_v1` names of the local CA.
const CA_CERT: &str = "local_ca_certificate_pem";
const CA_KEY: &str = "local_ca_key_pem";
/// The local CA's lifetime, and its leaves'.
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 398;
const DAY_MILLIS: i64 = 86_400_000;

/// A private key's PEM; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(pub String);

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem(<redacted>)")
    }
}

/// A certificate and its key. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// Leaf first, then the issuer.
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
    /// `local`, `operator`, or `acme:<directory URL>`.
    pub issuer: String,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRecord")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertRecord {
    /// The ACME directory it came from, if it came from one.
    pub fn acme_directory(&self) -> Option<&str> {
        self.issuer.strip_prefix("acme:")
    }

    /// What `status` shows: `local`, `operator` or `acme`.
    pub fn issuer_kind(&self) -> &str {
        if self.acme_directory().is_some() {
            "acme"
        } else {
            &self.issuer
        }
    }

    /// Renewed once two thirds of its lifetime have passed (SPEC §11).
    pub fn needs_renewal(&self, now: i64) -> bool {
        let life = self.not_after.saturating_sub(self.not_before);
        now >= self.not_before.saturating_add(life / 3 * 2)
    }
}

fn tls_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("certificate: {e}"))
}

fn offset(millis: i64) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::from_unix_timestamp(millis.div_euclid(1000)).map_err(tls_error)
}

/// The CA's parameters: the same every time, so its issuer can be rebuilt from its key alone.
fn ca_params(not_before: i64) -> Result<CertificateParams, StoreError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "eliza-cloud local CA");
    name.push(DnType::OrganizationName, "eliza-cloud");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_before.saturating_add(CA_DAYS * DAY_MILLIS))?;
    Ok(params)
}

fn secret(txn: &impl ReadTx, name: &str) -> Result<Option<String>, StoreError> {
    Ok(txn
        .read_table(SECRETS)?
        .get(name)?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
}

/// The local CA's certificate (PEM), made on first use.
pub fn ensure_ca(txn: &WriteTransaction, now: i64) -> Result<String, StoreError> {
    if let Some(pem) = secret(txn, CA_CERT)? {
        return Ok(pem);
    }
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = ca_params(now)?.self_signed(&key).map_err(tls_error)?;
    let mut secrets = txn.open_table(SECRETS)?;
    secrets.insert(CA_CERT, cert.pem().as_bytes())?;
    secrets.insert(CA_KEY, key.serialize_pem().as_bytes())?;
    tracing::info!("local certificate authority created");
    Ok(cert.pem())
}

/// The local CA's certificate, if made.
pub fn ca_pem(txn: &impl ReadTx) -> Result<Option<String>, StoreError> {
    secret(txn, CA_CERT)
}

/// Issues a certificate for `names` (the first is its name) from the local CA.
pub fn issue_local(
    txn: &WriteTransaction,
    names: &[String],
    now: i64,
) -> Result<CertRecord, StoreError> {
    let ca = ensure_ca(txn, now)?;
    let ca_key = secret(txn, CA_KEY)?.ok_or_else(|| tls_error("the CA key is missing"))?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca_params(now)?, ca_key);
    let key = KeyPair::generate().map_err(tls_error)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(tls_error)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.use_authority_key_identifier_extension = true;
    let not_before = now.saturating_sub(DAY_MILLIS);
    let not_after = now.saturating_add(LEAF_DAYS * DAY_MILLIS);
    params.not_before = offset(not_before)?;
    params.not_after = offset(not_after)?;
    let leaf = params.signed_by(&key, &issuer).map_err(tls_error)?;
    Ok(CertRecord {
        chain_pem: format!("{}{}", leaf.pem(), ca),
        key_pem: key.serialize_pem(),
        not_before,
        not_after,
        issuer: "local".into(),
    })
}

pub fn get_cert(txn: &impl ReadTx, name: &str) -> Result<Option<CertRecord>, StoreError> {
    match txn.read_table(CERTIFICATES)?.get(name)? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    }
}

pub fn put_cert(txn: &WriteTransaction, name: &str, cert: &CertRecord) -> Result<(), StoreError> {
    txn.open_table(CERTIFICATES)?
        .insert(name, codec::encode(cert)?.as_slice())?;
    Ok(())
}

/// The name is no longer served: its certificate goes, and its place in the ACME queue.
pub fn release(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    txn.open_table(CERTIFICATES)?.remove(name)?;
    crate::domains::acme::forget(txn, name)?;
    Ok(())
}

/// The stored certificate for `name`, issued (or renewed) by the local CA when it is missing or
/// due. `alt` are its other names (the wildcard's bare domain).
pub fn ensure_local(
    txn: &WriteTransaction,
    name: &str,
    alt: &[String],
    now: i64,
) -> Result<CertRecord, StoreError> {
    if let Some(cert) = get_cert(txn, name)?
        && !cert.needs_renewal(now)
    {
        return Ok(cert);
    }
    let mut names = vec![name.to_string()];
    names.extend(alt.iter().cloned());
    let cert = issue_local(txn, &names, now)?;
    put_cert(txn, name, &cert)?;
    Ok(cert)
}

/// Every stored certificate by name.
pub fn all_certs(txn: &impl ReadTx) -> Result<Vec<(String, CertRecord)>, StoreError> {
    let mut out = Vec::new();
    for row in txn.read_table(CERTIFICATES)?.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_string(), codec::decode(v.value())?));
    }
    Ok(out)
}

/// A stored certificate as rustls serves it.
pub fn certified_key(cert: &CertRecord) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| "the certificate chain is not PEM".to_string())?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|_| "the certificate key is not PEM".to_string())?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("the certificate is unusable: {e}"))
}

/// What the server serves, as the flags ask (SPEC §11).
#[derive(Debug)]
pub struct Issuing<'a> {
    pub apps_domain: &'a str,
    /// The public URL's host.
    pub public_host: Option<&'a str>,
    /// `--tls-cert`/`--tls-key`.
    pub own: Option<&'a (String, KeyPem)>,
    /// `--apps-wildcard-cert`/`--apps-wildcard-key`.
    pub wildcard: Option<&'a (String, KeyPem)>,
    /// The `acme` issuer's directory, when it is configured.
    pub acme_directory: Option<&'a str>,
}

/// A certificate the operator gave: served as is, never stored, never renewed.
pub fn operator(pair: &(String, KeyPem)) -> CertRecord {
    CertRecord {
        chain_pem: pair.0.clone(),
        key_pem: pair.1.0.clone(),
        not_before: 0,
        not_after: i64::MAX,
        issuer: "operator".into(),
    }
}

/// Whether any certificate is due for the local issuer at `now` (a read, so the minute's check
/// writes nothing when nothing is due).
pub fn any_due(txn: &impl ReadTx, now: i64, acme: bool) -> Result<bool, StoreError> {
    Ok(all_certs(txn)?
        .iter()
        .any(|(_, cert)| local_renews(cert, acme) && cert.needs_renewal(now)))
}

/// Whether the local issuer renews `cert`: its own, and without an ACME issuer the ACME ones
/// left from when there was one.
fn local_renews(cert: &CertRecord, acme: bool) -> bool {
    cert.issuer == "local" || (!acme && cert.acme_directory().is_some())
}

/// What the server serves at start: the local CA, the apps wildcard (the operator's, or the
/// CA's), the public host's certificate and one per verified domain. With the `local` issuer
/// those are issued when missing or due; with `acme`, a name the CA can issue for that lacks a
/// certificate from the configured directory is queued for the issuer (its stored certificate,
/// if any, served until then). A restart reissues nothing that is fresh. Answers every certificate by name.
pub fn prepare(
    txn: &WriteTransaction,
    how: &Issuing<'_>,
    now: i64,
) -> Result<Vec<(String, CertRecord)>, StoreError> {
    ensure_ca(txn, now)?;
    let wildcard = format!("*.{}", how.apps_domain);
    let mut out = vec![(
        wildcard.clone(),
        match how.wildcard {
            Some(pair) => operator(pair),
            None => ensure_local(txn, &wildcard, &[how.apps_domain.to_string()], now)?,
        },
    )];
    if how.acme_directory.is_none() {
        // The local CA covers every name: nothing waits for the ACME issuer.
        crate::domains::acme::forget_all(txn)?;
    }
    let mut names: Vec<String> = Vec::new();
    if let Some(host) = how.public_host {
        match how.own {
            Some(pair) => out.push((host.to_string(), operator(pair))),
            None => names.push(host.to_string()),
        }
    }
    for (name, _) in crate::store::domains::all_verified(txn)? {
        names.push(name);
    }
    // What is stored and nothing else: a name no longer served (the public URL or the apps domain
    // changed, an operator's certificate replaced the issuer's) is neither renewed nor ordered.
    let mut keep: std::collections::HashSet<String> = names.iter().cloned().collect();
    if how.wildcard.is_none() {
        keep.insert(wildcard.clone());
    }
    let stale: Vec<String> = all_certs(txn)?
        .into_iter()
        .map(|(name, _)| name)
        .chain(
            crate::domains::acme::all_pending(txn)?
                .into_iter()
                .map(|(name, _)| name),
        )
        .filter(|name| !keep.contains(name))
        .collect();
    for name in stale {
        tracing::info!(name = %name, "certificate dropped: the name is no longer served");
        release(txn, &name)?;
    }
    for name in names {
        if let Some(directory) = how
            .acme_directory
            .filter(|_| crate::domains::acme::orderable(&name))
        {
            let stored = get_cert(txn, &name)?;
            if stored
                .as_ref()
                .is_none_or(|c| c.acme_directory() != Some(directory))
            {
                crate::domains::acme::want(txn, &name, now)?;
            }
            if let Some(cert) = stored {
                out.push((name, cert));
            }
        } else {
            let cert = ensure_local(txn, &name, &[], now)?;
            // The local CA covers it: it does not wait for the ACME issuer.
            crate::domains::acme::forget(txn, &name)?;
            out.push((name, cert));
        }
    }
    Ok(out)
}

/// Reissues from the local CA every certificate past two thirds of its lifetime at `now` that
/// is the local issuer's to renew: its own, and with no ACME issuer configured also the ACME
/// ones left from when it was. Answers the new ones by name (for the SNI map). The operator's
/// own certificates are left to the operator; the ACME issuer renews its own.
pub fn renew_due(
    txn: &WriteTransaction,
    now: i64,
    acme: bool,
) -> Result<Vec<(String, CertRecord)>, StoreError> {
    let mut renewed = Vec::new();
    for (name, cert) in all_certs(txn)? {
        if !local_renews(&cert, acme) || !cert.needs_renewal(now) {
            continue;
        }
        // The wildcard also names its bare domain, as at its first issue.
        let alt: Vec<String> = name
            .strip_prefix("*.")
            .map(|bare| vec![bare.to_string()])
            .unwrap_or_default();
        let mut names = vec![name.clone()];
        names.extend(alt);
        let fresh = issue_local(txn, &names, now)?;
        put_cert(txn, &name, &fresh)?;
        renewed.push((name, fresh));
    }
    Ok(renewed)
}

/// `check`'s part: every certificate decodes and loads, and every verified domain has one.
pub fn check(txn: &impl ReadTx) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut names = std::collections::HashSet::new();
    for row in txn.read_table(CERTIFICATES)?.iter()? {
        let (key, value) = row?;
        let name = key.value().to_string();
        match codec::decode::<CertRecord>(value.value()) {
            Ok(cert) => {
                if let Err(e) = certified_key(&cert) {
                    problems.push(format!("certificate {name}: {e}"));
                }
            }
            Err(e) => problems.push(format!("certificates: a record does not decode: {e}")),
        }
        names.insert(name);
    }
    for (domain, _) in crate::store::domains::all_verified(txn)? {
        let waiting = crate::domains::acme::pending_of(txn, &domain)?.is_some();
        if !names.contains(&domain) && !waiting {
            problems.push(format!(
                "verified domain {domain} has no certificate and none is on order"
            ));
        }
    }
    for (name, _) in crate::domains::acme::all_pending(txn)? {
        if crate::domains::name::check_domain(&name, "invalid.invalid").is_err() {
            problems.push(format!(
                "the certificate queue holds {name:?}, not a domain"
            ));
        }
    }
    Ok(problems)
}

/// Name → certificate, from memory, for the TLS listener (SNI).
#[derive(Default)]
pub struct CertMap {
    certs: RwLock<HashMap<String, Arc<rustls::sign::CertifiedKey>>>,
}

impl std::fmt::Debug for CertMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertMap")
            .field("names", &self.certs.read().map_or(0, |c| c.len()))
            .finish()
    }
}

impl CertMap {
    pub fn insert(&self, name: String, cert: &CertRecord) {
        match certified_key(cert) {
            Ok(key) => {
                if let Ok(mut certs) = self.certs.write() {
                    certs.insert(name, key);
                }
            }
            Err(e) => {
                tracing::error!(name = %name, error = %e, "a certificate could not be loaded")
            }
        }
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut certs) = self.certs.write() {
            certs.remove(name);
        }
    }

    /// The certificate for an SNI name: exact, else the wildcard one label up. O(1).
    pub fn find(&self, name: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let certs = self.certs.read().ok()?;
        if let Some(found) = certs.get(&name) {
            return Some(found.clone());
        }
        let (_, parent) = name.split_once('.')?;
        certs.get(&format!("*.{parent}")).cloned()
    }
}

impl rustls::server::ResolvesServerCert for CertMap {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.find(hello.server_name()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_of_the_local_ca_loads_and_is_found_by_sni() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let cert = store
            .write(|txn| ensure_local(txn, "*.apps.localhost", &["apps.localhost".into()], 0))
            .unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        let again = store
            .write(|txn| ensure_local(txn, "*.apps.localhost", &[], 1000))
            .unwrap();
        assert_eq!(again, cert, "not reissued while fresh");
        let map = CertMap::default();
        map.insert("*.apps.localhost".into(), &cert);
        assert!(map.find("shop.apps.localhost").is_some());
        assert!(map.find("SHOP.apps.localhost").is_some());
        assert!(
            map.find("a.b.apps.localhost").is_none(),
            "a wildcard covers one label"
        );
        assert!(map.find("example.com").is_none());
        let life = cert.not_after - cert.not_before;
        assert!(cert.needs_renewal(cert.not_before + life / 3 * 2));
        assert!(!cert.needs_renewal(cert.not_before + life / 2));
    }

    #[test]
    fn prepare_queues_for_acme_only_what_a_public_ca_can_issue_and_keeps_what_it_has() {
        use crate::domains::acme::{all_pending, want};
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let (app, org) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        store
            .write(|txn| {
                crate::store::domains::add_claim(txn, app, org, "shop.example.com", 0)
                    .map_err(|_| StoreError::Db("claim".into()))?;
                crate::store::domains::mark_verified(txn, app, "shop.example.com", 0)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let how = |public: &'static str, acme: bool| Issuing {
            apps_domain: "apps.example.com",
            public_host: Some(public),
            own: None,
            wildcard: None,
            acme_directory: acme.then_some("https://ca.example/dir"),
        };
        let served = store
            .write(|txn| prepare(txn, &how("cloud.example.com", true), 0))
            .unwrap();
        let names: Vec<&str> = served.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["*.apps.example.com"],
            "nothing else until the CA answers"
        );
        let queued: Vec<String> = store
            .read(all_pending)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(queued, ["cloud.example.com", "shop.example.com"]);
        // `localhost` cannot get a public certificate: the local CA's, at once.
        store.write(crate::domains::acme::forget_all).unwrap();
        let served = store
            .write(|txn| prepare(txn, &how("localhost", true), 0))
            .unwrap();
        assert!(
            served
                .iter()
                .any(|(n, c)| n == "localhost" && c.issuer == "local")
        );
        assert_eq!(store.read(all_pending).unwrap().len(), 1);
        // An `acme` certificate in hand is served and not ordered again at a restart.
        let mut acme_cert = store
            .write(|txn| issue_local(txn, &["shop.example.com".into()], 0))
            .unwrap();
        acme_cert.issuer = "acme:https://ca.example/dir".into();
        store
            .write(|txn| {
                put_cert(txn, "shop.example.com", &acme_cert)?;
                crate::domains::acme::forget_all(txn)
            })
            .unwrap();
        let served = store
            .write(|txn| prepare(txn, &how("localhost", true), 1000))
            .unwrap();
        assert!(served.contains(&("shop.example.com".to_string(), acme_cert.clone())));
        assert!(store.read(all_pending).unwrap().is_empty());
        assert_eq!(acme_cert.issuer_kind(), "acme");
        // Another directory (staging → production): ordered there, the old one served meanwhile.
        let production = Issuing {
            acme_directory: Some("https://other.example/dir"),
            ..how("localhost", true)
        };
        let served = store.write(|txn| prepare(txn, &production, 1000)).unwrap();
        assert!(served.contains(&("shop.example.com".to_string(), acme_cert.clone())));
        assert_eq!(store.read(all_pending).unwrap().len(), 1);
        store.write(crate::domains::acme::forget_all).unwrap();
        // The local issuer empties the queue, and does not renew an ACME certificate early.
        store.write(|txn| want(txn, "shop.example.com", 0)).unwrap();
        store
            .write(|txn| prepare(txn, &how("localhost", false), 1000))
            .unwrap();
        assert!(store.read(all_pending).unwrap().is_empty());
        assert!(
            store
                .write(|txn| renew_due(txn, 1000, false))
                .unwrap()
                .is_empty()
        );
        let late = acme_cert.not_before + (acme_cert.not_after - acme_cert.not_before) / 3 * 2;
        assert!(
            store
                .write(|txn| renew_due(txn, late, true))
                .unwrap()
                .iter()
                .all(|(n, _)| n != "shop.example.com")
        );
        let renewed = store.write(|txn| renew_due(txn, late, false)).unwrap();
        assert!(
            renewed
                .iter()
                .any(|(n, c)| n == "shop.example.com" && c.issuer == "local")
        );
        // A name no longer served goes at the next start: the old public host's certificate.
        assert!(
            store
                .read(|txn| get_cert(txn, "localhost"))
                .unwrap()
                .is_some()
        );
        store
            .write(|txn| prepare(txn, &how("other.localhost", false), late))
            .unwrap();
        assert!(
            store
                .read(|txn| get_cert(txn, "localhost"))
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .read(|txn| get_cert(txn, "other.localhost"))
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .read(|txn| get_cert(txn, "shop.example.com"))
                .unwrap()
                .is_some()
        );
    }
}
