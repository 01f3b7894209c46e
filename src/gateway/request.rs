//! The request bodies of the metered routes (SPEC §9), parsed and checked before anything is
//! reserved: OpenAI's field names, OpenAI's defaults, and a 400 naming the first bad field. The
//! parsed object keeps the body as sent, so a forwarded request is the caller's own.

use serde_json::{Map, Value, json};

use super::tokens;
use crate::web::error::ApiError;

/// Most choices of one chat call.
pub const MAX_CHOICES: u32 = 8;
/// Most images of one call.
pub const MAX_IMAGES: u32 = 10;
/// Most inputs of one embeddings call (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;
/// Longest image prompt, in characters (as JSON Schema counts a string's length).
pub const MAX_PROMPT_CHARS: usize = 32_000;
/// Most messages of one chat call.
pub const MAX_MESSAGES: usize = 4096;

fn invalid(field: &str, why: impl Into<String>) -> ApiError {
    let why = why.into();
    ApiError::Validation {
        message: format!("{field}: {why}"),
        details: json!({ field: why }),
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidJson(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::InvalidJson(if body.is_empty() {
            "the body is empty".into()
        } else {
            e.to_string()
        })),
    }
}

fn model_field(map: &Map<String, Value>) -> Result<String, ApiError> {
    match map.get("model") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Ok(id.clone()),
        Some(Value::String(_)) => Err(invalid("model", "must be a model id")),
        None | Some(Value::Null) => Err(invalid("model", "is required")),
        Some(_) => Err(invalid("model", "must be a string")),
    }
}

fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

/// A positive integer up to `max`, or absent.
fn optional_count(
    map: &Map<String, Value>,
    field: &str,
    max: u64,
) -> Result<Option<u32>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => crate::api::input::whole_number(value)
            .filter(|n| (1..=max).contains(n))
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(field, format!("must be an integer from 1 to {max}"))),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The body as sent (forwarded upstream with the cap and model set).
    pub raw: Map<String, Value>,
    pub model: String,
    /// Input tokens by the counting rule.
    pub input_tokens: u64,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub requested_cap: Option<u32>,
    /// `n`, default 1.
    pub n: u32,
}

impl ChatRequest {
    /// The messages (checked by [`parse_chat`] to be a non-empty array of objects).
    pub fn messages(&self) -> &[Value] {
        self.raw
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let raw = object(body)?;
    let model = model_field(&raw)?;
    let messages = match raw.get("messages") {
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(invalid("messages", "must not be empty"));
        }
        Some(Value::Array(list)) if list.len() > MAX_MESSAGES => {
            return Err(invalid(
                "messages",
                format!("at most {MAX_MESSAGES} messages"),
            ));
        }
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(invalid("messages", "is required")),
        Some(_) => return Err(invalid("messages", "must be an array of messages")),
    };
    for message in messages {
        let Some(fields) = message.as_object() else {
            return Err(invalid("messages", "each message must be an object"));
        };
        match fields.get("role") {
            Some(Value::String(role)) if !role.is_empty() => {}
            _ => return Err(invalid("messages", "each message needs a string role")),
        }
        match fields.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(invalid(
                    "messages",
                    "a message's content must be a string or an array of parts",
                ));
            }
        }
    }
    let stream = optional_bool(&raw, "stream")?.unwrap_or(false);
    let include_usage = match raw.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => optional_bool(options, "include_usage")
            .map_err(|_| invalid("stream_options", "include_usage must be true or false"))?
            .unwrap_or(false),
        Some(_) => return Err(invalid("stream_options", "must be an object")),
    };
    let max_tokens = optional_count(&raw, "max_tokens", u64::from(u32::MAX))?;
    let max_completion = optional_count(&raw, "max_completion_tokens", u64::from(u32::MAX))?;
    let n = optional_count(&raw, "n", u64::from(MAX_CHOICES))?.unwrap_or(1);
    let input_tokens = tokens::chat_input(messages).saturating_add(tokens::chat_extra_input(&raw));
    Ok(ChatRequest {
        input_tokens,
        raw,
        model,
        stream,
        include_usage,
        requested_cap: max_completion.or(max_tokens),
        n,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    pub raw: Map<String, Value>,
    pub model: String,
    pub inputs: Vec<String>,
    pub encoding: Encoding,
    pub dimensions: Option<u32>,
    pub input_tokens: u64,
}

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingRequest, ApiError> {
    let raw = object(body)?;
    let model = model_field(&raw)?;
    let inputs = match raw.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(list)) if list.is_empty() => {
            return Err(invalid("input", "must not be empty"));
        }
        Some(Value::Array(list)) if list.len() > MAX_EMBEDDING_INPUTS => {
            return Err(invalid(
                "input",
                format!("at most {MAX_EMBEDDING_INPUTS} inputs"),
            ));
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("input", "must be a string or an array of strings"))?,
        None | Some(Value::Null) => return Err(invalid("input", "is required")),
        Some(_) => return Err(invalid("input", "must be a string or an array of strings")),
    };
    if inputs.iter().any(String::is_empty) {
        return Err(invalid("input", "an input must not be empty"));
    }
    let encoding = match raw.get("encoding_format") {
        None | Some(Value::Null) => Encoding::Float,
        Some(Value::String(f)) if f == "float" => Encoding::Float,
        Some(Value::String(f)) if f == "base64" => Encoding::Base64,
        Some(_) => return Err(invalid("encoding_format", "must be float or base64")),
    };
    let dimensions = optional_count(&raw, "dimensions", u64::from(super::models::MAX_DIMENSIONS))?;
    Ok(EmbeddingRequest {
        input_tokens: tokens::embedding_input(&inputs),
        raw,
        model,
        inputs,
        encoding,
        dimensions,
    })
}

/// The image sizes served (SPEC §9).
pub const SIZES: [(&str, u32); 3] = [("256x256", 256), ("512x512", 512), ("1024x1024", 1024)];

#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub raw: Map<String, Value>,
    /// Absent: the table's first image model.
    pub model: Option<String>,
    pub prompt: String,
    pub n: u32,
    pub size: &'static str,
    /// Width and height in pixels.
    pub side: u32,
}

pub fn parse_images(body: &[u8]) -> Result<ImageRequest, ApiError> {
    let raw = object(body)?;
    let model = match raw.get("model") {
        None | Some(Value::Null) => None,
        Some(_) => Some(model_field(&raw)?),
    };
    let prompt = match raw.get("prompt") {
        Some(Value::String(p)) if p.is_empty() => {
            return Err(invalid("prompt", "must not be empty"));
        }
        Some(Value::String(p)) if p.chars().count() > MAX_PROMPT_CHARS => {
            return Err(invalid(
                "prompt",
                format!("at most {MAX_PROMPT_CHARS} characters"),
            ));
        }
        Some(Value::String(p)) => p.clone(),
        None | Some(Value::Null) => return Err(invalid("prompt", "is required")),
        Some(_) => return Err(invalid("prompt", "must be a string")),
    };
    let n = optional_count(&raw, "n", u64::from(MAX_IMAGES))?.unwrap_or(1);
    let (size, side) = match raw.get("size") {
        None | Some(Value::Null) => ("1024x1024", 1024),
        Some(Value::String(s)) => SIZES
            .iter()
            .find(|(name, _)| name == s)
            .copied()
            .ok_or_else(|| invalid("size", "must be 256x256, 512x512 or 1024x1024"))?,
        Some(_) => return Err(invalid("size", "must be 256x256, 512x512 or 1024x1024")),
    };
    match raw.get("response_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "b64_json" => {}
        Some(Value::String(f)) if f == "url" => {
            return Err(invalid(
                "response_format",
                "url is not served here (the appliance keeps no image store); use b64_json",
            ));
        }
        Some(_) => return Err(invalid("response_format", "must be b64_json")),
    }
    Ok(ImageRequest {
        raw,
        model,
        prompt,
        n,
        size,
        side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn param(e: ApiError) -> String {
        match e {
            ApiError::Validation { details, .. } => {
                details.as_object().unwrap().keys().next().unwrap().clone()
            }
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn chat_bodies() {
        let c =
            parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(
            (c.model.as_str(), c.stream, c.include_usage, c.n),
            ("m", false, false, 1)
        );
        assert_eq!(c.requested_cap, None);
        assert_eq!(c.input_tokens, 4 + 1 + 1);
        let c = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":null}],"stream":true,
                "stream_options":{"include_usage":true},"max_tokens":50,"max_completion_tokens":20,"n":2}"#,
        )
        .unwrap();
        assert!(c.stream && c.include_usage);
        assert_eq!((c.requested_cap, c.n), (Some(20), 2));
        let cases: [(&[u8], &str); 10] = [
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (br#"{"model":5,"messages":[]}"#, "model"),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (br#"{"model":"m","messages":["hi"]}"#, "messages"),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, "messages"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":9}"#,
                "n",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":1}"#,
                "stream_options",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(
                param(parse_chat(body).unwrap_err()),
                field,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(parse_chat(b"[1]"), Err(ApiError::InvalidJson(_))));
        assert!(matches!(parse_chat(b""), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn embedding_bodies() {
        let e = parse_embeddings(br#"{"model":"e","input":"abcd"}"#).unwrap();
        assert_eq!(
            (e.inputs.len(), e.encoding, e.dimensions, e.input_tokens),
            (1, Encoding::Float, None, 1)
        );
        let e = parse_embeddings(
            br#"{"model":"e","input":["a","b"],"encoding_format":"base64","dimensions":3}"#,
        )
        .unwrap();
        assert_eq!(
            (e.inputs.len(), e.encoding, e.dimensions),
            (2, Encoding::Base64, Some(3))
        );
        for (body, field) in [
            (&br#"{"model":"e"}"#[..], "input"),
            (br#"{"model":"e","input":[]}"#, "input"),
            (br#"{"model":"e","input":[1,2]}"#, "input"),
            (br#"{"model":"e","input":""}"#, "input"),
            (
                br#"{"model":"e","input":"x","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (br#"{"model":"e","input":"x","dimensions":0}"#, "dimensions"),
        ] {
            assert_eq!(param(parse_embeddings(body).unwrap_err()), field);
        }
    }

    #[test]
    fn image_bodies() {
        let i = parse_images(br#"{"prompt":"a cat"}"#).unwrap();
        assert_eq!((i.model, i.n, i.size, i.side), (None, 1, "1024x1024", 1024));
        let i = parse_images(br#"{"prompt":"a cat","model":"x","n":2,"size":"256x256","response_format":"b64_json"}"#).unwrap();
        assert_eq!((i.model.as_deref(), i.n, i.side), (Some("x"), 2, 256));
        for (body, field) in [
            (&br#"{}"#[..], "prompt"),
            (br#"{"prompt":""}"#, "prompt"),
            (br#"{"prompt":"x","size":"100x100"}"#, "size"),
            (
                br#"{"prompt":"x","response_format":"url"}"#,
                "response_format",
            ),
            (br#"{"prompt":"x","n":11}"#, "n"),
        ] {
            assert_eq!(param(parse_images(body).unwrap_err()), field);
        }
    }

    proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_with_a_400(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            for result in [
                parse_chat(&body).err(),
                parse_embeddings(&body).err(),
                parse_images(&body).err(),
            ].into_iter().flatten() {
                prop_assert_eq!(result.status().as_u16(), 400);
            }
        }

        #[test]
        fn chat_round_trip(model in "[a-z0-9.-]{1,20}", text in "\\PC{0,40}", cap in 1u32..100_000, stream: bool) {
            let body = json!({"model": model, "messages": [{"role": "user", "content": text}],
                              "max_tokens": cap, "stream": stream});
            let parsed = parse_chat(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(parsed.model, model);
            prop_assert_eq!(parsed.requested_cap, Some(cap));
            prop_assert_eq!(parsed.stream, stream);
            prop_assert_eq!(parsed.input_tokens, 4 + 1 + tokens::count(&text));
        }
    }
}
