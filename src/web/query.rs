//! Query strings: `a=1&b=x%20y` → decoded pairs. Percent-escapes must be well formed and decode
//! to UTF-8; `+` is a space (form encoding, as browsers and SDKs send it).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryError;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one component.
pub fn percent_decode(text: &str) -> Result<String, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex).ok_or(QueryError)?;
                let lo = bytes.get(i + 2).copied().and_then(hex).ok_or(QueryError)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError)
}

/// All pairs in order; a part without `=` is a key with an empty value; empty parts are skipped.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// The first value of `name`, if any.
pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes() {
        assert_eq!(
            parse_query("a=1&b=x%20y&c&&d=%E2%82%AC+z").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "".into()),
                ("d".into(), "€ z".into())
            ]
        );
        assert_eq!(parse_query("").unwrap(), vec![]);
        for bad in ["a=%", "a=%2", "a=%zz", "a=%FF"] {
            assert_eq!(parse_query(bad), Err(QueryError), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn encoding_every_byte_round_trips(value in ".{0,30}") {
            let encoded: String = value.bytes().map(|b| format!("%{b:02X}")).collect();
            prop_assert_eq!(percent_decode(&encoded).unwrap(), value);
        }

        #[test]
        fn never_panics(text in ".{0,60}") {
            let _ = parse_query(&text);
        }
    }
}

/// `page` (from 1) and `limit` (1..=`max`) of a listing route (SPEC §2: out of range is 400,
/// never a silent clamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub limit: u64,
}

/// Highest page number a listing accepts.
pub const MAX_PAGE: u64 = 1_000_000;

impl Paging {
    /// Reads `page` and `limit` from a query string; a malformed query or a value out of range
    /// is one `VALIDATION_ERROR` naming each bad parameter.
    pub fn from_query(
        query: Option<&str>,
        default_limit: u64,
        max_limit: u64,
    ) -> Result<Paging, crate::web::error::ApiError> {
        use serde_json::Value;
        let pairs = parse_query(query.unwrap_or("")).map_err(|_| {
            crate::web::error::ApiError::Validation {
                message: "Malformed query string".into(),
                details: serde_json::json!({ "query": "bad percent-encoding" }),
            }
        })?;
        let mut details = serde_json::Map::new();
        let mut number = |name: &str, default: u64, max: u64| match first(&pairs, name) {
            None => default,
            Some(text) => match text.parse::<u64>().ok().filter(|n| (1..=max).contains(n)) {
                Some(n) => n,
                None => {
                    details.insert(
                        name.into(),
                        Value::String(format!("must be a whole number from 1 to {max}")),
                    );
                    default
                }
            },
        };
        let page = number("page", 1, MAX_PAGE);
        let limit = number("limit", default_limit, max_limit);
        if !details.is_empty() {
            return Err(crate::web::error::ApiError::Validation {
                message: "Invalid query parameters".into(),
                details: Value::Object(details),
            });
        }
        Ok(Paging { page, limit })
    }

    /// How many items come before this page.
    pub fn offset(&self) -> usize {
        usize::try_from(self.page.saturating_sub(1).saturating_mul(self.limit))
            .unwrap_or(usize::MAX)
    }

    /// The slice of `items` this page shows.
    pub fn slice<T>(&self, items: &[T]) -> std::ops::Range<usize> {
        let start = usize::try_from((self.page - 1).saturating_mul(self.limit))
            .unwrap_or(usize::MAX)
            .min(items.len());
        let end = start
            .saturating_add(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .min(items.len());
        start..end
    }
}
