//! Handlers, one module per resource, plus the JSON views of stored records. Handlers never open
//! a table themselves: they call the store's aggregate functions.

pub mod app_page;
pub mod apps;
pub mod auth;
pub mod dashboard;
pub mod domains;
pub mod earnings;
pub mod gateway;
pub mod input;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod signin;
pub mod topup;
pub mod usage;
pub mod webhooks;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::store::keys::ApiKeyRecord;
use crate::store::orgs::OrgRecord;
use crate::store::users::UserRecord;
use crate::time::Timestamp;

pub fn time(millis: i64) -> Value {
    Value::String(Timestamp(millis).to_rfc3339())
}

/// An EVM address as answers show it: EIP-55. A stored value that does not parse (never written
/// by this code) is shown as stored.
pub fn shown_evm_address(stored: &str) -> String {
    match crate::crypto::eth::Address::parse_any_case(stored) {
        Ok(address) => address.to_checksum(),
        Err(_) => stored.to_string(),
    }
}

/// A user as the API shows it. Borrowed and derived, so answers serialise without building
/// intermediate JSON trees (the hot `whoami` path).
#[derive(Serialize)]
pub struct UserView<'a> {
    id: &'a Uuid,
    organization_id: &'a Uuid,
    name: Option<&'a str>,
    /// EIP-55 (SPEC §3: stored lowercase, shown checksummed).
    wallet_address: Option<String>,
    solana_address: Option<&'a str>,
    role: &'static str,
    is_active: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

pub fn user_view(user: &UserRecord) -> UserView<'_> {
    UserView {
        id: &user.id,
        organization_id: &user.organization_id,
        name: user.name.as_deref(),
        wallet_address: user.wallet_address.as_deref().map(shown_evm_address),
        solana_address: user.solana_address.as_deref(),
        role: user.role.as_str(),
        is_active: user.is_active,
        created_at: Timestamp(user.created_at),
        updated_at: Timestamp(user.updated_at),
    }
}

#[derive(Serialize)]
pub struct OrgView<'a> {
    id: &'a Uuid,
    name: &'a str,
    slug: &'a str,
    plan: &'static str,
    is_active: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

pub fn org_view(org: &OrgRecord) -> OrgView<'_> {
    OrgView {
        id: &org.id,
        name: &org.name,
        slug: &org.slug,
        plan: org.plan.as_str(),
        is_active: org.is_active,
        created_at: Timestamp(org.created_at),
        updated_at: Timestamp(org.updated_at),
    }
}

/// The short view of a key that `whoami` shows: never a hash or a plaintext.
#[derive(Serialize)]
pub struct KeySummaryView<'a> {
    id: &'a Uuid,
    key_prefix: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    permissions: &'a [String],
}

pub fn key_summary_view(key: &ApiKeyRecord) -> KeySummaryView<'_> {
    KeySummaryView {
        id: &key.id,
        key_prefix: &key.key_prefix,
        key_type: key.key_type.as_str(),
        permissions: &key.permissions,
    }
}
