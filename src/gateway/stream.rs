//! Server-sent events in and out (SPEC §9): the incremental parser that reads an upstream's
//! stream as it arrives, the reader that pulls the usage and the content length out of each chunk,
//! and the framing of what we send (`data: <json>` and a blank line, no `event:` lines).

use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Longest event accepted from an upstream, in bytes: a chat chunk is far smaller; anything
/// longer is a broken or hostile upstream, answered with a stream error.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// `data: [DONE]`, the stream's end.
pub const DONE: &[u8] = b"[DONE]";

/// One event's `data` (its `data:` lines joined by `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub data: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// An event grew past [`MAX_EVENT_BYTES`].
    TooLong,
}

/// The SSE grammar as the WHATWG spec gives it, incrementally: lines end in `\n`, `\r\n` or
/// `\r`; a blank line dispatches the event; `:` lines are comments; fields other than `data`
/// are ignored; one space after the colon is dropped. Bytes may arrive split anywhere.
#[derive(Debug, Default)]
pub struct Parser {
    /// The unfinished line.
    line: BytesMut,
    /// The event's data so far.
    data: BytesMut,
    has_data: bool,
    /// The previous byte was `\r` (a `\n` right after it ends nothing more).
    after_cr: bool,
}

impl Parser {
    /// Feeds bytes; answers the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, ParseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr && b == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                self.end_line(&mut events);
            } else {
                if self.line.len() + self.data.len() >= MAX_EVENT_BYTES {
                    return Err(ParseError::TooLong);
                }
                self.line.extend_from_slice(&[b]);
            }
        }
        Ok(events)
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if self.has_data {
                events.push(Event {
                    data: std::mem::take(&mut self.data).freeze(),
                });
                self.has_data = false;
            }
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(at) => {
                let value = line.get(at + 1..).unwrap_or(&[]);
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (line.get(..at).unwrap_or(&[]), value)
            }
            None => (&line[..], &[][..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.extend_from_slice(b"\n");
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }
}

/// Frames one payload as we send it: `data: <payload>\n\n`.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// The comment line sent during a long silence so proxies keep the stream open.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Token counts as a provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Usage {
    /// `usage` of a chat completion, a chunk or an embedding answer, when it has the counts.
    pub fn of(value: &Value) -> Option<Usage> {
        let usage = value.get("usage")?;
        let prompt = usage.get("prompt_tokens")?.as_u64()?;
        let completion = usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
        })
    }
}

/// What one chunk of a chat stream says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A `chat.completion.chunk`: the bytes of content it carries (every choice's
    /// `delta.content`), and its usage when it has one. `usage_only`: the chunk has no choices
    /// and a usage (the one `include_usage` asks for).
    Completion {
        content_bytes: u64,
        usage: Option<Usage>,
        usage_only: bool,
    },
    /// `[DONE]`.
    Done,
    /// `{"error": …}`: the upstream failed mid-stream.
    Error,
    /// Not JSON, or JSON of another shape: passed on, counted as nothing.
    Other,
}

/// The output a message or a delta carries, in bytes for the counting rule: its `content`,
/// `refusal` and `reasoning_content` text, and the JSON text of its `tool_calls` and
/// `function_call`.
pub fn output_bytes(message: &Value) -> u64 {
    let text = |field: &str| {
        message
            .get(field)
            .and_then(Value::as_str)
            .map_or(0, |s| s.len() as u64)
    };
    let json = |field: &str| match message.get(field) {
        None | Some(Value::Null) => 0,
        Some(value) => value.to_string().len() as u64,
    };
    text("content")
        .saturating_add(text("refusal"))
        .saturating_add(text("reasoning_content"))
        .saturating_add(json("tool_calls"))
        .saturating_add(json("function_call"))
}

pub fn read_chunk(data: &[u8]) -> Chunk {
    if data == DONE {
        return Chunk::Done;
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return Chunk::Other;
    };
    if value.get("error").is_some_and(|e| !e.is_null()) {
        return Chunk::Error;
    }
    let Some(choices) = value.get("choices").and_then(Value::as_array) else {
        return match Usage::of(&value) {
            Some(usage) => Chunk::Completion {
                content_bytes: 0,
                usage: Some(usage),
                usage_only: true,
            },
            None => Chunk::Other,
        };
    };
    let content_bytes = choices
        .iter()
        .filter_map(|c| c.get("delta"))
        .map(output_bytes)
        .sum();
    let usage = Usage::of(&value);
    Chunk::Completion {
        content_bytes,
        usage,
        usage_only: choices.is_empty() && usage.is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn datas(events: Vec<Event>) -> Vec<String> {
        events
            .into_iter()
            .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn the_grammar() {
        let mut p = Parser::default();
        let text = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: x\ndata:two\ndata: lines\r\n\r\ndata\n\nid: 3\n\n";
        assert_eq!(
            datas(p.push(text).unwrap()),
            ["{\"a\":1}", "two\nlines", ""]
        );
        // Split anywhere, \r alone ends a line too.
        let mut p = Parser::default();
        let mut got = Vec::new();
        for piece in [&b"da"[..], b"ta: x\r", b"\r", b"data: [DONE]", b"\n", b"\n"] {
            got.extend(datas(p.push(piece).unwrap()));
        }
        assert_eq!(got, ["x", "[DONE]"]);
    }

    #[test]
    fn an_endless_event_is_refused() {
        let mut p = Parser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big), Err(ParseError::TooLong));
    }

    #[test]
    fn chunks_are_read() {
        assert_eq!(read_chunk(b"[DONE]"), Chunk::Done);
        assert_eq!(
            read_chunk(br#"{"choices":[{"index":0,"delta":{"content":"hello"}},{"index":1,"delta":{"content":"ab"}}]}"#),
            Chunk::Completion { content_bytes: 7, usage: None, usage_only: false }
        );
        assert_eq!(
            read_chunk(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#),
            Chunk::Completion {
                content_bytes: 0,
                usage: Some(Usage { prompt_tokens: 3, completion_tokens: 4 }),
                usage_only: true
            }
        );
        assert_eq!(read_chunk(br#"{"error":{"message":"x"}}"#), Chunk::Error);
        // Tool calls are output too.
        let tool = br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#;
        let Chunk::Completion { content_bytes, .. } = read_chunk(tool) else {
            panic!("a chunk");
        };
        assert!(content_bytes > 20, "{content_bytes}");
        assert_eq!(read_chunk(b"nope"), Chunk::Other);
    }

    proptest! {
        #[test]
        fn framed_payloads_parse_back_whatever_the_split(
            payloads in proptest::collection::vec("[^\r\n]{0,30}", 1..8),
            cut in 0usize..400,
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(p.as_bytes()).to_vec()).collect();
            let cut = cut.min(wire.len());
            let mut p = Parser::default();
            let mut got = datas(p.push(&wire[..cut]).unwrap());
            got.extend(datas(p.push(&wire[cut..]).unwrap()));
            // A payload that is empty still dispatches (its data line is present).
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..500)) {
            let mut p = Parser::default();
            let _ = p.push(&bytes);
            let _ = read_chunk(&bytes);
        }
    }
}
