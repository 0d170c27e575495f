//! sftpack's data engine. One module per pipeline stage:
//!
//! ```text
//! read → (map) → schema → template → tokenize → mask → encode
//! ```
//!
//! [`read`] streams records with their file and line, [`map`] runs an optional user function
//! over them, [`schema`] maps every supported format to
//! one canonical conversation and reports problems, [`template`] renders it, [`tokenize`] turns
//! text into ids, [`mask`] decides which tokens are trained, and [`encode`] ties them together.
//! [`pipeline`] runs them over whole datasets for [`check`] and [`preprocess`], which packs
//! ([`pack`]) and writes ([`shard`]) the result. [`prompt`] renders generation prompts and stop
//! tokens with a pack's template, for chat and samples. The pyo3 layer lives in `python` alone.

/// A hash of the engine's sources, built-in templates and locked dependencies (build.rs): pack
/// keys and the tokenizer cache both depend on it.
pub(crate) const ENGINE_BUILD: &str = env!("SFTPACK_ENGINE_BUILD");

pub mod check;
pub mod encode;
pub mod error;
pub mod map;
pub mod mask;
pub mod pack;
pub mod pipeline;
pub mod preprocess;
pub mod profile;
pub mod prompt;
pub mod read;
pub mod schema;
pub mod shard;
pub mod tally;
pub mod template;
pub mod tokenize;

#[cfg(feature = "python")]
mod python;
