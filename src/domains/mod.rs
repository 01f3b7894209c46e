//! App domains (SPEC §11): names (`name`), and the in-memory host map that routes a request's
//! `Host` to an app: every app's subdomain under the apps domain and every verified custom
//! domain. The map is loaded at start and changed by hooks that run right after the commit that
//! changed the store (`Store::write_hooked`), so the request after the commit sees it.

pub mod acme;
pub mod certs;
pub mod name;

use std::collections::HashMap;
use std::sync::RwLock;

use uuid::Uuid;

use crate::store::{Store, StoreError};

/// Default `--apps-domain`.
pub const DEFAULT_APPS_DOMAIN: &str = "apps.localhost";

/// Host → app, from memory.
#[derive(Debug)]
pub struct HostMap {
    apps_domain: String,
    hosts: RwLock<HashMap<String, Uuid>>,
}

impl HostMap {
    /// The map of what the store holds now.
    pub fn load(store: &Store, apps_domain: &str) -> Result<HostMap, StoreError> {
        let map = HostMap {
            apps_domain: apps_domain.to_ascii_lowercase(),
            hosts: RwLock::default(),
        };
        let (subdomains, verified) = store.read(|txn| {
            Ok::<_, StoreError>((
                crate::store::apps::all_subdomains(txn)?,
                crate::store::domains::all_verified(txn)?,
            ))
        })?;
        for (label, app) in subdomains {
            map.insert(map.subdomain_host(&label), app);
        }
        for (name, app) in verified {
            map.insert(name, app);
        }
        Ok(map)
    }

    /// A map with no host (when the store could not be read).
    pub fn load_empty(apps_domain: &str) -> HostMap {
        HostMap {
            apps_domain: apps_domain.to_ascii_lowercase(),
            hosts: RwLock::default(),
        }
    }

    pub fn apps_domain(&self) -> &str {
        &self.apps_domain
    }

    /// `<label>.<apps domain>`.
    pub fn subdomain_host(&self, label: &str) -> String {
        format!("{label}.{}", self.apps_domain)
    }

    pub fn insert(&self, host: String, app: Uuid) {
        if let Ok(mut hosts) = self.hosts.write() {
            hosts.insert(host, app);
        }
    }

    pub fn remove(&self, host: &str) {
        if let Ok(mut hosts) = self.hosts.write() {
            hosts.remove(host);
        }
    }

    /// The app a host (already keyed by `name::host_key`) serves.
    pub fn app_of(&self, host: &str) -> Option<Uuid> {
        self.hosts.read().ok()?.get(host).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.read().map_or(true, |h| h.is_empty())
    }
}
