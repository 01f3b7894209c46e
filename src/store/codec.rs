//! The one encoding of stored records. This is the only file that names bincode: every value in a
//! table is `[FORMAT_VERSION] ++ bincode(serde)` with the fixed configuration below.
//!
//! WIRE/DISK FORMAT: changing `FORMAT_VERSION`, the configuration, or the field order of any stored
//! record changes what is on disk and needs a migration (see `migrations.rs`).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Leading byte of every stored value. Bump it only together with a migration that rewrites
/// every record.
pub const FORMAT_VERSION: u8 = 1;

/// Largest value we ever decode; anything bigger is corrupt by definition.
const MAX_RECORD_BYTES: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_RECORD_BYTES>()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    Empty,
    UnknownFormat(u8),
    Encode(String),
    Decode(String),
    TrailingBytes(usize),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Empty => write!(f, "empty record"),
            CodecError::UnknownFormat(v) => write!(f, "unknown record format version {v}"),
            CodecError::Encode(e) => write!(f, "cannot encode record: {e}"),
            CodecError::Decode(e) => write!(f, "cannot decode record: {e}"),
            CodecError::TrailingBytes(n) => write!(f, "record has {n} trailing bytes"),
        }
    }
}

impl std::error::Error for CodecError {}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes one record; a wrong version byte, a short or malformed body, or bytes left over are
/// all errors (never a panic), so a damaged table is reported, not half-read.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownFormat(version));
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::TrailingBytes(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        a: u64,
        b: String,
        c: Option<i64>,
    }

    #[test]
    fn round_trips_and_prefixes_version() {
        let s = Sample {
            a: 7,
            b: "x".into(),
            c: Some(-3),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn rejects_damage() {
        let bytes = encode(&Sample {
            a: 1,
            b: "hello".into(),
            c: None,
        })
        .unwrap();
        assert_eq!(decode::<Sample>(&[]), Err(CodecError::Empty));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert_eq!(decode::<Sample>(&wrong), Err(CodecError::UnknownFormat(9)));
        assert!(decode::<Sample>(&bytes[..bytes.len() - 2]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode::<Sample>(&long), Err(CodecError::TrailingBytes(1)));
    }
}
