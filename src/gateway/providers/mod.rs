//! The providers a model's calls go to (SPEC §9): `dev`, built in, and `openai-compatible`.

pub mod dev;
pub mod openai_compatible;
