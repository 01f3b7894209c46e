//! The `dev` provider (SPEC §9): built in, no network, deterministic. The same request gives the
//! same answer, byte for byte apart from `id` and `created`, across calls and restarts: every
//! answer is derived from SHA-256 of the request's own content. Chat answers are a sentence of
//! words picked by that hash, cut to the call's output cap by the counting rule; embeddings are
//! unit vectors of the requested size; images are a valid PNG of the requested size whose colours
//! come from the prompt.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::gateway::tokens;

/// The words the dev model speaks.
const WORDS: [&str; 64] = [
    "agent",
    "answer",
    "appliance",
    "balance",
    "binary",
    "bright",
    "budget",
    "careful",
    "cloud",
    "credit",
    "data",
    "debit",
    "deterministic",
    "developer",
    "dev",
    "durable",
    "eliza",
    "exact",
    "fast",
    "gateway",
    "honest",
    "idea",
    "integer",
    "key",
    "ledger",
    "local",
    "metered",
    "model",
    "network",
    "offline",
    "operator",
    "plain",
    "precise",
    "quiet",
    "ready",
    "request",
    "reserve",
    "response",
    "safe",
    "server",
    "signal",
    "simple",
    "small",
    "steady",
    "stream",
    "test",
    "token",
    "usage",
    "useful",
    "wallet",
    "word",
    "works",
    "always",
    "calm",
    "clear",
    "kind",
    "light",
    "open",
    "real",
    "sure",
    "true",
    "warm",
    "whole",
    "young",
];

/// An answer of one choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The words, each as streamed (the first without a leading space).
    pub pieces: Vec<String>,
    /// `stop`, or `length` when the output cap cut it.
    pub finish_reason: &'static str,
}

impl Choice {
    pub fn text(&self) -> String {
        self.pieces.concat()
    }
}

fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// An endless deterministic byte stream from a seed (SHA-256 in counter mode).
struct Bytes32 {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    at: usize,
}

impl Bytes32 {
    fn new(seed: [u8; 32]) -> Bytes32 {
        Bytes32 {
            seed,
            counter: 0,
            block: [0; 32],
            at: 32,
        }
    }

    fn next(&mut self) -> u8 {
        if self.at >= 32 {
            self.block = digest_of(&[&self.seed, &self.counter.to_be_bytes()]);
            self.counter += 1;
            self.at = 0;
        }
        let b = self.block.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn next_u32(&mut self) -> u32 {
        u32::from_be_bytes([self.next(), self.next(), self.next(), self.next()])
    }
}

/// The answers to a chat request: `n` choices within `cap` output tokens each.
pub fn chat(model: &str, messages: &[Value], n: u32, cap: u32) -> Vec<Choice> {
    let request = serde_json::to_vec(messages).unwrap_or_default();
    (0..n)
        .map(|index| {
            let seed = digest_of(&[model.as_bytes(), &request, &index.to_be_bytes()]);
            let mut bytes = Bytes32::new(seed);
            let words = 12 + usize::from(bytes.next() % 24);
            let mut pieces: Vec<String> = Vec::with_capacity(words);
            let mut finish_reason = "stop";
            let mut length = 0usize;
            for at in 0..words {
                let word = WORDS
                    .get(usize::from(bytes.next()) % WORDS.len())
                    .copied()
                    .unwrap_or("word");
                let mut piece = if at == 0 {
                    let mut first = word.to_string();
                    if let Some(c) = first.get_mut(..1) {
                        c.make_ascii_uppercase();
                    }
                    first
                } else {
                    format!(" {word}")
                };
                if at + 1 == words {
                    piece.push('.');
                }
                if tokens::count_len(length + piece.len()) > u64::from(cap) {
                    finish_reason = "length";
                    break;
                }
                length += piece.len();
                pieces.push(piece);
            }
            Choice {
                pieces,
                finish_reason,
            }
        })
        .collect()
}

/// A unit vector of `dimensions` floats for one input.
pub fn embedding(model: &str, input: &str, dimensions: u32) -> Vec<f32> {
    let mut bytes = Bytes32::new(digest_of(&[model.as_bytes(), input.as_bytes()]));
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| {
            // Uniform in [-1, 1), through f64 so the result is exact and the same everywhere.
            (f64::from(bytes.next_u32()) / f64::from(u32::MAX) * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = vector
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    vector
}

/// A PNG of `side × side` pixels: a vertical gradient between two colours taken from the
/// prompt (and the image's index, so `n` images differ).
pub fn image(prompt: &str, index: u32, side: u32) -> Result<Vec<u8>, png::EncodingError> {
    let seed = digest_of(&[prompt.as_bytes(), &index.to_be_bytes()]);
    let (top, bottom) = ([seed[0], seed[1], seed[2]], [seed[3], seed[4], seed[5]]);
    let side_len = usize::try_from(side).unwrap_or(0);
    let mut pixels = Vec::with_capacity(side_len * side_len * 3);
    for y in 0..side {
        let mix = |a: u8, b: u8| {
            let (a, b) = (u32::from(a), u32::from(b));
            u8::try_from((a * (side - 1 - y) + b * y) / (side - 1).max(1)).unwrap_or(u8::MAX)
        };
        let row = [
            mix(top[0], bottom[0]),
            mix(top[1], bottom[1]),
            mix(top[2], bottom[2]),
        ];
        for _ in 0..side {
            pixels.extend_from_slice(&row);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_is_deterministic_and_within_its_cap() {
        let messages = [json!({"role": "user", "content": "Hello"})];
        let a = chat("m", &messages, 2, 1000);
        assert_eq!(a, chat("m", &messages, 2, 1000));
        assert_ne!(a[0], a[1], "choices differ");
        assert_ne!(a, chat("other", &messages, 2, 1000));
        assert_eq!(a[0].finish_reason, "stop");
        assert!(a[0].text().ends_with('.'));
        for cap in [1u32, 3, 5, 8] {
            let cut = chat("m", &messages, 1, cap);
            assert!(tokens::count(&cut[0].text()) <= u64::from(cap));
            assert_eq!(cut[0].finish_reason, "length");
            assert!(a[0].text().starts_with(&cut[0].text()));
        }
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let v = embedding("e", "hello", 64);
        assert_eq!(v.len(), 64);
        let norm: f64 = v.iter().map(|x| f64::from(*x).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(v, embedding("e", "hello", 64));
        assert_ne!(v, embedding("e", "hello!", 64));
    }

    #[test]
    fn images_are_valid_pngs_of_their_size() {
        let bytes = image("a red cat", 0, 256).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (256, 256));
        assert!(bytes.len() < 8 * 1024, "small: {} bytes", bytes.len());
        assert_eq!(bytes, image("a red cat", 0, 256).unwrap());
        assert_ne!(bytes, image("a red cat", 1, 256).unwrap());
    }
}
