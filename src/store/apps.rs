//! Apps (SPEC §10): an integration an organization owns, with its own API key. Slugs and
//! subdomain labels are unique across the appliance (a subdomain is one name under the apps
//! domain); both are fixed at creation.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{APP_SLUGS, APP_SUBDOMAINS, APPS, APPS_BY_ORG};
use super::{ReadTx, StoreError, codec, get_record};

/// Longest slug (SPEC §10).
pub const MAX_SLUG: usize = 50;

/// Labels never given to an app as its subdomain (SPEC §11).
pub const RESERVED_LABELS: [&str; 16] = [
    "www",
    "api",
    "admin",
    "app",
    "apps",
    "auth",
    "dashboard",
    "login",
    "docs",
    "status",
    "mail",
    "static",
    "assets",
    "cdn",
    "support",
    "help",
];

/// Stored app. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// The user whose credential created it.
    pub created_by: Uuid,
    pub name: String,
    pub slug: String,
    /// The label under the apps domain (the slug, or the slug with a suffix when the slug is a
    /// reserved label or the label is taken).
    pub subdomain: String,
    pub app_url: String,
    pub description: Option<String>,
    pub website_url: Option<String>,
    pub logo_url: Option<String>,
    pub allowed_origins: Vec<String>,
    /// The app key's permissions (normalised).
    pub permissions: Vec<String>,
    /// The app key's requests per minute.
    pub rate_limit: u32,
    pub is_active: bool,
    /// The app's own key (`api_keys_v1`, with `app_id` this app).
    pub key_id: Uuid,
    pub monetization_enabled: bool,
    pub per_request_micros: i64,
    pub per_token_micros: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The slug of a name: lowercased, every run of characters other than `a-z0-9` one `-`, trimmed
/// of `-`, at most [`MAX_SLUG`] characters; empty when nothing is left.
pub fn slug_of(name: &str) -> String {
    let mut slug = String::with_capacity(name.len().min(MAX_SLUG));
    let mut dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !slug.is_empty() {
                slug.push('-');
            }
            dash = false;
            slug.push(c);
        } else {
            dash = true;
        }
        if slug.len() >= MAX_SLUG {
            break;
        }
    }
    slug.truncate(MAX_SLUG);
    slug.trim_end_matches('-').to_string()
}

/// The slug an app with this name and id gets: [`slug_of`], or `app-<first 8 hex of the id>`.
pub fn slug_for(name: &str, id: Uuid) -> String {
    let slug = slug_of(name);
    if slug.is_empty() {
        format!("app-{}", &id.simple().to_string()[..8])
    } else {
        slug
    }
}

pub fn slug_taken(txn: &impl ReadTx, slug: &str) -> Result<bool, StoreError> {
    Ok(txn.read_table(APP_SLUGS)?.get(slug)?.is_some())
}

pub fn subdomain_taken(txn: &impl ReadTx, label: &str) -> Result<bool, StoreError> {
    Ok(RESERVED_LABELS.contains(&label) || txn.read_table(APP_SUBDOMAINS)?.get(label)?.is_some())
}

/// Inserts an app and its indexes; a taken slug or subdomain is a conflict.
pub fn insert_app(txn: &WriteTransaction, app: &AppRecord) -> Result<(), StoreError> {
    let mut slugs = txn.open_table(APP_SLUGS)?;
    if slugs.get(app.slug.as_str())?.is_some() {
        return Err(StoreError::Conflict("app slug"));
    }
    let mut subdomains = txn.open_table(APP_SUBDOMAINS)?;
    if subdomains.get(app.subdomain.as_str())?.is_some() {
        return Err(StoreError::Conflict("app subdomain"));
    }
    slugs.insert(app.slug.as_str(), app.id.as_u128())?;
    subdomains.insert(app.subdomain.as_str(), app.id.as_u128())?;
    txn.open_table(APPS_BY_ORG)?
        .insert((app.organization_id.as_u128(), app.id.as_u128()), ())?;
    txn.open_table(APPS)?
        .insert(app.id.as_u128(), codec::encode(app)?.as_slice())?;
    Ok(())
}

/// Rewrites an app; its organization, slug and subdomain never change.
pub fn update_app(txn: &WriteTransaction, app: &AppRecord) -> Result<(), StoreError> {
    let mut apps = txn.open_table(APPS)?;
    let old: AppRecord = get_record(&apps, app.id.as_u128())?
        .ok_or_else(|| StoreError::Corrupt(format!("app {} vanished", app.id)))?;
    if old.slug != app.slug
        || old.subdomain != app.subdomain
        || old.organization_id != app.organization_id
    {
        return Err(StoreError::Corrupt(
            "an app's slug, subdomain and owner cannot change".into(),
        ));
    }
    apps.insert(app.id.as_u128(), codec::encode(app)?.as_slice())?;
    Ok(())
}

/// Deletes an app and its indexes (its key is the caller's to delete in the same transaction).
pub fn delete_app(txn: &WriteTransaction, id: Uuid) -> Result<Option<AppRecord>, StoreError> {
    let old: Option<AppRecord> = {
        let mut apps = txn.open_table(APPS)?;
        let removed = apps.remove(id.as_u128())?;
        match removed {
            Some(guard) => Some(codec::decode(guard.value())?),
            None => None,
        }
    };
    if let Some(old) = &old {
        txn.open_table(APP_SLUGS)?.remove(old.slug.as_str())?;
        txn.open_table(APP_SUBDOMAINS)?
            .remove(old.subdomain.as_str())?;
        txn.open_table(APPS_BY_ORG)?
            .remove((old.organization_id.as_u128(), id.as_u128()))?;
        // Its end users go with it (its ledger rows and usage history stay).
        super::usage::delete_app_users(txn, id)?;
    }
    Ok(old)
}

/// Every subdomain label and its app (the host map at start).
pub fn all_subdomains(txn: &impl ReadTx) -> Result<Vec<(String, Uuid)>, StoreError> {
    let mut out = Vec::new();
    for row in txn.read_table(APP_SUBDOMAINS)?.iter()? {
        let (label, app) = row?;
        out.push((label.value().to_string(), Uuid::from_u128(app.value())));
    }
    Ok(out)
}

pub fn get_app(txn: &impl ReadTx, id: Uuid) -> Result<Option<AppRecord>, StoreError> {
    get_record(&txn.read_table(APPS)?, id.as_u128())
}

/// An organization's apps, newest first.
pub fn list_apps_of_org(txn: &impl ReadTx, org: Uuid) -> Result<Vec<AppRecord>, StoreError> {
    let index = txn.read_table(APPS_BY_ORG)?;
    let apps = txn.read_table(APPS)?;
    let org = org.as_u128();
    let mut out = Vec::new();
    for row in index.range((org, 0)..=(org, u128::MAX))? {
        let (key, _) = row?;
        let found: Option<AppRecord> = get_record(&apps, key.value().1)?;
        if let Some(app) = found {
            out.push(app);
        }
    }
    out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert_eq!(slug_of("My Cool App!"), "my-cool-app");
        assert_eq!(slug_of("  --Hello__World--  "), "hello-world");
        assert_eq!(slug_of("Ünïcödé"), "n-c-d");
        assert_eq!(slug_of("!!!"), "");
        let id = Uuid::parse_str("6f1c1f52-4f0e-4d8e-9a53-0c6f1b3f9a11").unwrap();
        assert_eq!(slug_for("!!!", id), "app-6f1c1f52");
        assert_eq!(slug_of(&"a".repeat(80)).len(), MAX_SLUG);
        assert!(!slug_of(&format!("{}-b", "a".repeat(49))).ends_with('-'));
    }

    proptest! {
        #[test]
        fn a_slug_is_always_a_clean_label(name in "\\PC{0,120}") {
            let slug = slug_of(&name);
            prop_assert!(slug.len() <= MAX_SLUG);
            prop_assert!(slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!slug.starts_with('-') && !slug.ends_with('-') && !slug.contains("--"));
            prop_assert_eq!(slug_of(&slug), slug.clone(), "idempotent");
        }
    }
}
