//! The model table (SPEC §9): what the gateway serves, who provides it, and its prices in integer
//! micro-dollars. Built in, or read whole from `--models FILE` (JSON `{"models": [...]}` or TOML
//! `[[models]]`); a bad file stops start-up with a message naming the entry and the field.

use std::collections::HashMap;

use serde::Deserialize;

/// Largest price accepted in a model file, micro-dollars (per million tokens, or per image):
/// one million dollars. Keeps every cost product far inside `u128` and every cost inside `i64`.
pub const MAX_PRICE_MICROS: i64 = 1_000_000_000_000;
/// Largest `max_output_tokens`.
pub const MAX_OUTPUT_TOKENS: u32 = 10_000_000;
/// Largest embedding size.
pub const MAX_DIMENSIONS: u32 = 16_384;
/// Largest `--markup-percent`.
pub const MAX_MARKUP_PERCENT: u32 = 1000;
/// Longest model id.
const MAX_ID_LEN: usize = 128;
/// Most models in one table.
const MAX_MODELS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Chat,
    Embedding,
    Image,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Embedding => "embedding",
            Kind::Image => "image",
        }
    }
}

/// Who answers a model's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Provider {
    /// Built in, deterministic, no network (`gateway::providers::dev`).
    #[serde(rename = "dev")]
    Dev,
    /// Forwarded to `--upstream-url` with `--upstream-key`.
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
}

impl Provider {
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Dev => "dev",
            Provider::OpenAiCompatible => "openai-compatible",
        }
    }
}

/// One model, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub kind: Kind,
    pub provider: Provider,
    /// Micro-dollars per million input tokens (chat, embeddings).
    pub input_price_micros_per_million: i64,
    /// Micro-dollars per million output tokens (chat).
    pub output_price_micros_per_million: i64,
    /// Micro-dollars per image (images).
    pub price_micros_per_image: i64,
    /// The output cap of a chat call (chat); 0 for other kinds.
    pub max_output_tokens: u32,
    /// The default embedding size (embeddings); 0 for other kinds.
    pub dimensions: u32,
    /// The name sent upstream.
    pub upstream_model: String,
}

/// A model file entry as written; every field is checked by [`validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    kind: Kind,
    provider: Option<Provider>,
    input_price_micros_per_million: Option<i64>,
    output_price_micros_per_million: Option<i64>,
    price_micros_per_image: Option<i64>,
    max_output_tokens: Option<u32>,
    dimensions: Option<u32>,
    upstream_model: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    models: Vec<Entry>,
}

/// The table: models in file order, found by id in O(1).
#[derive(Debug, Clone, Default)]
pub struct ModelTable {
    models: Vec<Model>,
    by_id: HashMap<String, usize>,
}

fn model_id_is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

fn price(value: Option<i64>, field: &str) -> Result<i64, String> {
    match value {
        None => Err(format!("field `{field}` is required for this kind")),
        Some(v) if !(0..=MAX_PRICE_MICROS).contains(&v) => Err(format!(
            "field `{field}`: {v} is not a price from 0 to {MAX_PRICE_MICROS} micro-dollars"
        )),
        Some(v) => Ok(v),
    }
}

fn absent<T>(value: &Option<T>, field: &str, kind: Kind) -> Result<(), String> {
    match value {
        Some(_) => Err(format!(
            "field `{field}` does not apply to a {} model",
            kind.as_str()
        )),
        None => Ok(()),
    }
}

fn validate(entry: Entry) -> Result<Model, String> {
    if !model_id_is_valid(&entry.id) {
        return Err(format!(
            "field `id`: must be 1 to {MAX_ID_LEN} printable ASCII characters without spaces"
        ));
    }
    let upstream_model = match entry.upstream_model {
        Some(name) if !model_id_is_valid(&name) => {
            return Err(format!(
                "field `upstream_model`: must be 1 to {MAX_ID_LEN} printable ASCII characters \
                 without spaces"
            ));
        }
        Some(name) => name,
        None => entry.id.clone(),
    };
    let mut model = Model {
        id: entry.id,
        kind: entry.kind,
        provider: entry.provider.unwrap_or(Provider::Dev),
        input_price_micros_per_million: 0,
        output_price_micros_per_million: 0,
        price_micros_per_image: 0,
        max_output_tokens: 0,
        dimensions: 0,
        upstream_model,
    };
    match entry.kind {
        Kind::Chat => {
            model.input_price_micros_per_million = price(
                entry.input_price_micros_per_million,
                "input_price_micros_per_million",
            )?;
            model.output_price_micros_per_million = price(
                entry.output_price_micros_per_million,
                "output_price_micros_per_million",
            )?;
            model.max_output_tokens = match entry.max_output_tokens {
                Some(n) if (1..=MAX_OUTPUT_TOKENS).contains(&n) => n,
                Some(n) => {
                    return Err(format!(
                        "field `max_output_tokens`: {n} is not from 1 to {MAX_OUTPUT_TOKENS}"
                    ));
                }
                None => return Err("field `max_output_tokens` is required for chat".into()),
            };
            absent(
                &entry.price_micros_per_image,
                "price_micros_per_image",
                entry.kind,
            )?;
            absent(&entry.dimensions, "dimensions", entry.kind)?;
        }
        Kind::Embedding => {
            model.input_price_micros_per_million = price(
                entry.input_price_micros_per_million,
                "input_price_micros_per_million",
            )?;
            // Embeddings have no output tokens; a price of 0 may be written out.
            if let Some(p) = entry.output_price_micros_per_million {
                model.output_price_micros_per_million =
                    price(Some(p), "output_price_micros_per_million")?;
            }
            model.dimensions = match entry.dimensions {
                Some(n) if (1..=MAX_DIMENSIONS).contains(&n) => n,
                Some(n) => {
                    return Err(format!(
                        "field `dimensions`: {n} is not from 1 to {MAX_DIMENSIONS}"
                    ));
                }
                None => return Err("field `dimensions` is required for embedding".into()),
            };
            absent(
                &entry.price_micros_per_image,
                "price_micros_per_image",
                entry.kind,
            )?;
            absent(&entry.max_output_tokens, "max_output_tokens", entry.kind)?;
        }
        Kind::Image => {
            model.price_micros_per_image =
                price(entry.price_micros_per_image, "price_micros_per_image")?;
            absent(
                &entry.input_price_micros_per_million,
                "input_price_micros_per_million",
                entry.kind,
            )?;
            absent(
                &entry.output_price_micros_per_million,
                "output_price_micros_per_million",
                entry.kind,
            )?;
            absent(&entry.max_output_tokens, "max_output_tokens", entry.kind)?;
            absent(&entry.dimensions, "dimensions", entry.kind)?;
        }
    }
    Ok(model)
}

impl ModelTable {
    /// A table of validated models; ids must be unique.
    pub fn new(models: Vec<Model>) -> Result<ModelTable, String> {
        if models.len() > MAX_MODELS {
            return Err(format!("at most {MAX_MODELS} models"));
        }
        let mut by_id = HashMap::with_capacity(models.len());
        for (at, model) in models.iter().enumerate() {
            if by_id.insert(model.id.clone(), at).is_some() {
                return Err(format!(
                    "entry {} (id {:?}): the id is used by an earlier entry",
                    at + 1,
                    model.id
                ));
            }
        }
        Ok(ModelTable { models, by_id })
    }

    /// The built-in table: OpenAI's names at OpenAI's list prices, answered by `provider`
    /// (`dev` unless the operator configured an upstream).
    pub fn builtin(provider: Provider) -> ModelTable {
        let chat = |id: &str, input, output, max| Model {
            id: id.into(),
            kind: Kind::Chat,
            provider,
            input_price_micros_per_million: input,
            output_price_micros_per_million: output,
            price_micros_per_image: 0,
            max_output_tokens: max,
            dimensions: 0,
            upstream_model: id.into(),
        };
        let embedding = |id: &str, input, dimensions| Model {
            id: id.into(),
            kind: Kind::Embedding,
            provider,
            input_price_micros_per_million: input,
            output_price_micros_per_million: 0,
            price_micros_per_image: 0,
            max_output_tokens: 0,
            dimensions,
            upstream_model: id.into(),
        };
        let models = vec![
            chat("gpt-4o-mini", 150_000, 600_000, 16_384),
            chat("gpt-4o", 2_500_000, 10_000_000, 16_384),
            chat("gpt-4.1-mini", 400_000, 1_600_000, 32_768),
            embedding("text-embedding-3-small", 20_000, 1536),
            embedding("text-embedding-3-large", 130_000, 3072),
            Model {
                id: "dall-e-3".into(),
                kind: Kind::Image,
                provider,
                input_price_micros_per_million: 0,
                output_price_micros_per_million: 0,
                price_micros_per_image: 40_000,
                max_output_tokens: 0,
                dimensions: 0,
                upstream_model: "dall-e-3".into(),
            },
        ];
        ModelTable::new(models).unwrap_or_default()
    }

    /// Parses a model file: TOML when `name` ends in `.toml`, else JSON. Every error names the
    /// entry (1-based) and the field.
    pub fn parse(name: &str, text: &str) -> Result<ModelTable, String> {
        let file: File = if name.ends_with(".toml") {
            toml::from_str(text).map_err(|e| format!("not a TOML model file: {}", e.message()))?
        } else {
            serde_json::from_str(text).map_err(|e| format!("not a JSON model file: {e}"))?
        };
        if file.models.is_empty() {
            return Err("the file lists no models".into());
        }
        let mut models = Vec::with_capacity(file.models.len());
        for (at, entry) in file.models.into_iter().enumerate() {
            let id = entry.id.clone();
            models.push(validate(entry).map_err(|e| format!("entry {} (id {id:?}): {e}", at + 1))?);
        }
        ModelTable::new(models)
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.get(*self.by_id.get(id)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }

    /// The first model of a kind (the default image model).
    pub fn first_of(&self, kind: Kind) -> Option<&Model> {
        self.models.iter().find(|m| m.kind == kind)
    }

    /// Whether any model is forwarded upstream.
    pub fn uses_upstream(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.provider == Provider::OpenAiCompatible)
    }
}

/// The cost of a token-priced call, in micro-dollars, computed once (SPEC §9):
/// `ceil((input × input_price + output × output_price) × (100 + markup) / (100 × 1,000,000))`.
/// Saturates at `i64::MAX` (never reached with the file's bounds and real token counts).
pub fn token_cost(model: &Model, input_tokens: u64, output_tokens: u64, markup: u32) -> i64 {
    let raw = u128::from(input_tokens)
        .saturating_mul(model.input_price_micros_per_million.unsigned_abs().into())
        .saturating_add(
            u128::from(output_tokens)
                .saturating_mul(model.output_price_micros_per_million.unsigned_abs().into()),
        );
    let marked = raw.saturating_mul(u128::from(100 + markup));
    i64::try_from(marked.div_ceil(100 * 1_000_000)).unwrap_or(i64::MAX)
}

/// The cost of `n` images: `ceil(n × price × (100 + markup) / 100)`.
pub fn image_cost(model: &Model, n: u64, markup: u32) -> i64 {
    let marked = u128::from(n)
        .saturating_mul(model.price_micros_per_image.unsigned_abs().into())
        .saturating_mul(u128::from(100 + markup));
    i64::try_from(marked.div_ceil(100)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JSON: &str = r#"{"models": [
        {"id": "chat-a", "kind": "chat", "provider": "dev", "input_price_micros_per_million": 1000000,
         "output_price_micros_per_million": 2000000, "max_output_tokens": 100},
        {"id": "emb", "kind": "embedding", "input_price_micros_per_million": 20000, "dimensions": 8},
        {"id": "img", "kind": "image", "provider": "openai-compatible", "price_micros_per_image": 40000,
         "upstream_model": "dall-e-3"}
    ]}"#;

    const TOML: &str = r#"
[[models]]
id = "chat-a"
kind = "chat"
provider = "dev"
input_price_micros_per_million = 1000000
output_price_micros_per_million = 2000000
max_output_tokens = 100

[[models]]
id = "emb"
kind = "embedding"
input_price_micros_per_million = 20000
dimensions = 8

[[models]]
id = "img"
kind = "image"
provider = "openai-compatible"
price_micros_per_image = 40000
upstream_model = "dall-e-3"
"#;

    #[test]
    fn json_and_toml_files_give_the_same_table() {
        let json = ModelTable::parse("m.json", JSON).unwrap();
        let toml = ModelTable::parse("m.toml", TOML).unwrap();
        let a: Vec<_> = json.iter().cloned().collect();
        let b: Vec<_> = toml.iter().cloned().collect();
        assert_eq!(a, b);
        let chat = json.get("chat-a").unwrap();
        assert_eq!(chat.provider, Provider::Dev);
        assert_eq!(chat.upstream_model, "chat-a");
        assert_eq!(json.get("img").unwrap().upstream_model, "dall-e-3");
        assert!(json.uses_upstream());
        assert_eq!(json.first_of(Kind::Image).unwrap().id, "img");
        assert!(json.get("nope").is_none());
    }

    #[test]
    fn bad_files_name_the_entry_and_the_field() {
        let cases = [
            (
                r#"{"models": [{"id": "a", "kind": "chat", "input_price_micros_per_million": 1, "output_price_micros_per_million": 1}]}"#,
                "entry 1 (id \"a\"): field `max_output_tokens`",
            ),
            (
                r#"{"models": [{"id": "a", "kind": "embedding", "input_price_micros_per_million": -1, "dimensions": 3}]}"#,
                "field `input_price_micros_per_million`",
            ),
            (
                r#"{"models": [{"id": "a", "kind": "image", "price_micros_per_image": 1, "dimensions": 3}]}"#,
                "field `dimensions` does not apply",
            ),
            (
                r#"{"models": [{"id": "a b", "kind": "image", "price_micros_per_image": 1}]}"#,
                "field `id`",
            ),
            (
                r#"{"models": [{"id": "a", "kind": "image", "price_micros_per_image": 1},
                               {"id": "a", "kind": "image", "price_micros_per_image": 1}]}"#,
                "entry 2 (id \"a\"): the id is used",
            ),
            (
                r#"{"models": [{"id": "a", "kind": "video", "price_micros_per_image": 1}]}"#,
                "unknown variant",
            ),
            (
                r#"{"models": [{"id": "a", "kind": "image", "price": 1}]}"#,
                "unknown field",
            ),
            (r#"{"models": []}"#, "no models"),
            ("not json", "not a JSON model file"),
        ];
        for (text, expected) in cases {
            let err = ModelTable::parse("m.json", text).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let err = ModelTable::parse("m.toml", "[[models]]\nid = 3\n").unwrap_err();
        assert!(err.contains("TOML"), "{err}");
    }

    #[test]
    fn costs_follow_the_formula() {
        let table = ModelTable::parse("m.json", JSON).unwrap();
        let chat = table.get("chat-a").unwrap();
        // 10 × $1/M + 5 × $2/M = 20 micro-dollars... of a million: 20 / 1 = 20.
        assert_eq!(token_cost(chat, 10, 5, 0), 20);
        // Rounded up: 1 token at $1/M is one micro-dollar.
        assert_eq!(token_cost(chat, 1, 0, 0), 1);
        assert_eq!(token_cost(chat, 0, 0, 0), 0);
        // 25% markup on 20 = 25.
        assert_eq!(token_cost(chat, 10, 5, 25), 25);
        let img = table.get("img").unwrap();
        assert_eq!(image_cost(img, 3, 0), 120_000);
        assert_eq!(image_cost(img, 1, 10), 44_000);
        let builtin = ModelTable::builtin(Provider::Dev);
        let mini = builtin.get("gpt-4o-mini").unwrap();
        // 1000 in, 1000 out: 0.15 + 0.6 = 0.00075 dollars.
        assert_eq!(token_cost(mini, 1000, 1000, 0), 750);
        assert!(!builtin.uses_upstream());
        assert!(ModelTable::builtin(Provider::OpenAiCompatible).uses_upstream());
    }

    proptest! {
        #[test]
        fn cost_is_the_exact_ceiling(input in 0u64..10_000_000, output in 0u64..10_000_000,
                                     ip in 0i64..=MAX_PRICE_MICROS, op in 0i64..=MAX_PRICE_MICROS,
                                     markup in 0u32..=MAX_MARKUP_PERCENT) {
            let mut model = ModelTable::builtin(Provider::Dev).get("gpt-4o").unwrap().clone();
            model.input_price_micros_per_million = ip;
            model.output_price_micros_per_million = op;
            let cost = token_cost(&model, input, output, markup);
            let exact = (u128::from(input) * ip as u128 + u128::from(output) * op as u128)
                * u128::from(100 + markup);
            let denominator = 100u128 * 1_000_000;
            let cost = cost as u128;
            prop_assert!(cost * denominator >= exact);
            prop_assert!(cost == 0 || (cost - 1) * denominator < exact);
            // Monotone in the tokens.
            prop_assert!(token_cost(&model, input + 1, output, markup) as u128 >= cost);
        }

        #[test]
        fn any_file_text_is_parsed_or_refused(text in "\\PC{0,300}") {
            let _ = ModelTable::parse("m.json", &text);
            let _ = ModelTable::parse("m.toml", &text);
        }
    }
}
