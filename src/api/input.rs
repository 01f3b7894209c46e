//! Reading JSON request bodies field by field, collecting every bad field into one
//! `VALIDATION_ERROR` whose `details` name each of them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::auth::permissions::normalise;
use crate::time::{Timestamp, parse_rfc3339};
use crate::web::body::parse_json;
use crate::web::error::ApiError;

/// A JSON number that is a whole number, as JSON Schema counts one: `5` and `5.0` both (a client
/// that writes floats sends the latter), never `5.5`, a negative or a float past 2^53.
pub fn whole_number(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (f.fract() == 0.0 && (0.0..=EXACT).contains(&f)).then_some(f as u64)
}

/// The longest `name` of a key or an app, in characters.
pub const MAX_NAME: usize = 100;
/// The longest `description` of an API key, in characters.
pub const MAX_KEY_DESCRIPTION: usize = 500;
/// The longest `description` of an app, in characters.
pub const MAX_APP_DESCRIPTION: usize = 1000;
/// The longest opaque token a body carries (`apiKey` for a key session, `idempotency_key`).
pub const MAX_TOKEN: usize = 200;
/// The highest per-key or per-app `rateLimit`, in requests per minute.
pub const MAX_RATE_LIMIT: u32 = 100_000;

pub struct Fields {
    object: Map<String, Value>,
    errors: BTreeMap<String, String>,
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value, `None` when absent.
pub type Patch<T> = Option<Option<T>>;

impl Fields {
    /// The body must be one JSON object.
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        match parse_json::<Value>(body)? {
            Value::Object(object) => Ok(Fields {
                object,
                errors: BTreeMap::new(),
            }),
            _ => Err(ApiError::Validation {
                message: "Request body must be a JSON object".into(),
                details: serde_json::json!({ "body": "expected a JSON object" }),
            }),
        }
    }

    pub fn fail(&mut self, field: &str, why: impl Into<String>) {
        self.errors
            .entry(field.to_string())
            .or_insert_with(|| why.into());
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name)
    }

    /// A field's raw value, for checks of its own.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }

    /// Reads `alias` as `name` when only the alias was sent (the public docs' other spellings).
    pub fn alias(&mut self, alias: &str, name: &str) {
        if !self.object.contains_key(name)
            && let Some(value) = self.object.remove(alias)
        {
            self.object.insert(name.to_string(), value);
        }
    }

    /// A string of 1..=`max` characters; `required` makes absence an error.
    pub fn string(&mut self, name: &str, max: usize, required: bool) -> Option<String> {
        match self.get(name).cloned() {
            None if required => {
                self.fail(name, "is required");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                let trimmed = s.trim();
                let chars = trimmed.chars().count();
                if chars == 0 || chars > max {
                    self.fail(name, format!("must be 1 to {max} characters"));
                    None
                } else {
                    Some(trimmed.to_string())
                }
            }
            Some(_) => {
                self.fail(name, "must be a string");
                None
            }
        }
    }

    /// A string that `null` clears (at most `max` characters; empty is the same as null).
    pub fn nullable_string(&mut self, name: &str, max: usize) -> Patch<String> {
        match self.get(name).cloned() {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.trim().is_empty() => Some(None),
            Some(Value::String(s)) if s.chars().count() <= max => Some(Some(s.trim().to_string())),
            Some(Value::String(_)) => {
                self.fail(name, format!("must be at most {max} characters"));
                None
            }
            Some(_) => {
                self.fail(name, "must be a string or null");
                None
            }
        }
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.get(name) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.fail(name, "must be true or false");
                None
            }
        }
    }

    /// `rateLimit` (or `rate_limit`): whole requests per minute in `1..=MAX_RATE_LIMIT`, or null.
    pub fn rate_limit(&mut self) -> Patch<u32> {
        let name = if self.object.contains_key("rateLimit") {
            "rateLimit"
        } else {
            "rate_limit"
        };
        match self.get(name) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => {
                match whole_number(v).filter(|n| (1..=u64::from(MAX_RATE_LIMIT)).contains(n)) {
                    Some(n) => Some(Some(n as u32)),
                    None => {
                        self.fail(
                            name,
                            format!("must be a whole number from 1 to {MAX_RATE_LIMIT}"),
                        );
                        None
                    }
                }
            }
        }
    }

    /// A list of permission names, normalised; unknown names are listed in the error.
    pub fn permissions(&mut self) -> Option<Vec<String>> {
        match self.get("permissions").cloned() {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut names = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => names.push(s),
                        _ => {
                            self.fail("permissions", "must be a list of strings");
                            return None;
                        }
                    }
                }
                match normalise(&names) {
                    Ok(list) => Some(list),
                    Err(unknown) => {
                        self.fail(
                            "permissions",
                            format!("unknown permissions: {}", unknown.join(", ")),
                        );
                        None
                    }
                }
            }
            Some(_) => {
                self.fail("permissions", "must be a list of strings");
                None
            }
        }
    }

    /// An RFC 3339 date-time, or null.
    pub fn timestamp(&mut self, name: &str) -> Patch<Timestamp> {
        match self.get(name) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) => match parse_rfc3339(s) {
                Some(t) => Some(Some(t)),
                None => {
                    self.fail(name, "must be an RFC 3339 date-time");
                    None
                }
            },
            Some(_) => {
                self.fail(name, "must be an RFC 3339 date-time string or null");
                None
            }
        }
    }

    /// Ends the reading: every collected problem becomes one 400.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = self.errors.keys().map(String::as_str).collect();
        Err(ApiError::Validation {
            message: format!("Invalid request body: {}", names.join(", ")),
            details: Value::Object(
                self.errors
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::whole_number;
    use serde_json::json;

    #[test]
    fn integral_floats_are_whole_numbers() {
        // Found by schemathesis: JSON Schema counts 436.0 as an integer.
        assert_eq!(whole_number(&json!(436)), Some(436));
        assert_eq!(whole_number(&json!(436.0)), Some(436));
        assert_eq!(whole_number(&json!(436.5)), None);
        assert_eq!(whole_number(&json!(-1)), None);
        assert_eq!(whole_number(&json!(-0.0)), Some(0));
        assert_eq!(whole_number(&json!(1e300)), None);
        assert_eq!(whole_number(&json!("5")), None);
    }
}
