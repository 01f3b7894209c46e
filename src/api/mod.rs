//! Handlers, one module per resource, plus the JSON views of stored records. Handlers never open
//! a table themselves: they call the store's aggregate functions.

pub mod auth;
pub mod dashboard;
pub mod input;
pub mod keys;
pub mod ops;

use serde_json::{Value, json};

use crate::clock::Timestamp;
use crate::money::format_dollars;
use crate::store::keys::ApiKeyRecord;
use crate::store::orgs::OrgRecord;
use crate::store::users::UserRecord;

pub fn time(millis: i64) -> Value {
    Value::String(Timestamp(millis).to_rfc3339())
}

pub fn user_view(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "organization_id": user.organization_id,
        "name": user.name,
        "wallet_address": user.wallet_address,
        "solana_address": user.solana_address,
        "role": user.role.as_str(),
        "is_active": user.is_active,
        "created_at": time(user.created_at),
        "updated_at": time(user.updated_at),
    })
}

pub fn org_view(org: &OrgRecord, balance_micros: Option<i64>) -> Value {
    let mut value = json!({
        "id": org.id,
        "name": org.name,
        "slug": org.slug,
        "plan": org.plan.as_str(),
        "is_active": org.is_active,
        "created_at": time(org.created_at),
        "updated_at": time(org.updated_at),
    });
    if let (Some(micros), Some(obj)) = (balance_micros, value.as_object_mut()) {
        obj.insert(
            "creditBalance".into(),
            Value::String(format_dollars(micros)),
        );
        obj.insert("creditBalance_micros".into(), Value::from(micros));
    }
    value
}

/// The short view of a key that `whoami` shows: never a hash or a plaintext.
pub fn key_summary_view(key: &ApiKeyRecord) -> Value {
    json!({
        "id": key.id,
        "key_prefix": key.key_prefix,
        "type": key.key_type.as_str(),
        "permissions": key.permissions,
    })
}
