//! The counting rule (SPEC §9): how the gateway counts tokens when no provider tells it, the same
//! rule for reservations, for the `dev` provider and for an upstream that reports no usage.
//!
//! **The rule:** a text is `ceil(bytes / 4)` tokens, its UTF-8 length divided by four and rounded
//! up (OpenAI's own rule of thumb for English: "one token is about four characters"). A chat
//! request's input is the sum over its messages of `4 + tokens(role) + tokens(content)`, where the
//! content is the string, or, for an array of parts, the text of each `text` part plus, for any
//! other part, the tokens of its JSON; a message's `name`, `tool_calls` and `tool_call_id` count
//! as the tokens of their JSON text. A chat answer's output is `tokens` of all its content text
//! together (not chunk by chunk, so streaming never costs more than the same answer whole), where
//! the text is every `content`, `refusal` and `reasoning_content` plus the JSON of `tool_calls`.
//! The request's `tools`, `functions`, `tool_choice` and `response_format` count as the tokens of
//! their JSON text too (a schema is input the provider reads). An embedding input is the sum of
//! `tokens` of each input string.

use serde_json::Value;

/// `ceil(utf8_len / 4)`.
pub fn count(text: &str) -> u64 {
    count_len(text.len())
}

/// The tokens of a text of `bytes` bytes.
pub fn count_len(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Per-message overhead of a chat request, in tokens.
pub const PER_MESSAGE: u64 = 4;

fn json_tokens(value: &Value) -> u64 {
    match value {
        Value::Null => 0,
        Value::String(text) => count(text),
        other => count(&other.to_string()),
    }
}

/// The tokens of one message's `content`.
fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(text) => count(text),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match (part.get("type"), part.get("text")) {
                (Some(Value::String(kind)), Some(Value::String(text))) if kind == "text" => {
                    count(text)
                }
                _ => json_tokens(part),
            })
            .fold(0, u64::saturating_add),
        other => json_tokens(other),
    }
}

/// A chat request's input tokens: the sum over `messages` (already checked to be an array of
/// objects).
pub fn chat_input(messages: &[Value]) -> u64 {
    messages
        .iter()
        .map(|message| {
            let field = |name: &str| message.get(name).map_or(0, json_tokens);
            PER_MESSAGE
                .saturating_add(field("role"))
                .saturating_add(message.get("content").map_or(0, content_tokens))
                .saturating_add(field("name"))
                .saturating_add(field("tool_calls"))
                .saturating_add(field("tool_call_id"))
        })
        .fold(0, u64::saturating_add)
}

/// The request fields beside `messages` that the provider reads as input.
pub const INPUT_FIELDS: [&str; 4] = ["tools", "functions", "tool_choice", "response_format"];

/// The input tokens of a chat request's other input fields ([`INPUT_FIELDS`]).
pub fn chat_extra_input(request: &serde_json::Map<String, Value>) -> u64 {
    INPUT_FIELDS
        .iter()
        .filter_map(|field| request.get(*field))
        .map(json_tokens)
        .fold(0, u64::saturating_add)
}

/// An embedding request's input tokens.
pub fn embedding_input(inputs: &[String]) -> u64 {
    inputs.iter().map(|s| count(s)).fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_rule_by_example() {
        assert_eq!(count(""), 0);
        assert_eq!(count("a"), 1);
        assert_eq!(count("abcd"), 1);
        assert_eq!(count("abcde"), 2);
        // Bytes, not characters: "é" is two bytes.
        assert_eq!(count("éé"), 1);
        assert_eq!(count("ééé"), 2);
        let messages = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": [{"type": "text", "text": "Hello!"}]}),
        ];
        // (4 + 2 + 3) + (4 + 1 + 2)
        assert_eq!(chat_input(&messages), 16);
        assert_eq!(embedding_input(&["abcd".into(), "abcde".into()]), 3);
    }

    proptest! {
        #[test]
        fn whole_text_never_costs_more_than_its_chunks(parts in proptest::collection::vec("\\PC{0,20}", 0..10)) {
            let whole: String = parts.concat();
            let chunked: u64 = parts.iter().map(|p| count(p)).sum();
            prop_assert!(count(&whole) <= chunked);
            prop_assert!(count(&whole) * 4 >= whole.len() as u64);
        }
    }
}
