//! The tokenizers 1.0 engine (release candidate, pinned exactly), about 20× faster than 0.23 on
//! one thread with the same ids. It returns ids only; token starts come from [`Spellings`], and
//! where those can't be derived the caller encodes with 0.23, which stays loaded for that.
//!
//! A tokenizer the 1.0 engine cannot load, or encodes differently from 0.23 on the probe texts
//! below, goes through 0.23 as a whole; the report says so and why. Setting
//! `SFTPACK_TOKENIZER_ENGINE=0.23` does the same on purpose (to compare engines, or to rule the
//! new one out).

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
pub(crate) use tokv1::pipeline::PipelineTokenizer;
use tokv1::pipeline::{EncodeOptions, PipelineToken};

use super::cache::Entry;
use super::spelling::Spellings;
use crate::error::Problem;

pub(crate) const FAST_ENGINE: &str = "tokenizers 1.0.0-rc.3";
pub(crate) const OLD_ENGINE: &str = "tokenizers 0.23";

/// Texts that exercise what tokenizers disagree on: whitespace runs, line breaks, digits,
/// contractions, scripts without spaces, byte fallback, emoji, code.
const PROBES: [&str; 8] = [
    "Hello, world! It's 2026-11-26: 1234567 apples cost $3.50.\n\n  Indented\tline\r\nend  ",
    "  leading spaces,\n\n\n\ttabs\t\tand trailing   \n",
    "你好，世界。日本語のテキスト、カタカナ。한국어 문장입니다.",
    "Ünïcödé façade naïve résumé — “quotes” … ½ ² ∑ ≠ 🤗🚀👩‍💻 e\u{301}",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\nif x >= 10 && y != -1 { z += 0x1F; }",
    "I'm we'll they'd you've she's DON'T Can't    ...   ?!?!",
    "Zeile1\nZeile2\n\nΑλφάβητο Кириллица العربية עברית हिन्दी ไทย",
    " \n \n\u{a0}x\u{3000}y\u{200b}z",
];

/// The ids tokenizers 0.23 gives the probes, alone and around every special token, in both
/// special-token modes: the reference a new 1.0 engine is checked against. Computed from a 0.23
/// load dropped at once, so a tokenizer's first job never holds both engines.
pub(crate) struct ProbeIds(Vec<(String, bool, Vec<u32>)>);

impl ProbeIds {
    pub(crate) fn compute(source: &str) -> Result<Self, String> {
        let mut reference = Tokenizer::from_str(source).map_err(|e| e.to_string())?;
        // The first 64 added tokens by id (the decoder is a hash map: sorted, so every load
        // probes the same ones and reaches the same verdict).
        let mut added: Vec<(u32, String)> = reference
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| !t.content.is_empty())
            .map(|(id, t)| (id, t.content))
            .collect();
        added.sort_unstable();
        let specials: Vec<String> = added.into_iter().take(64).map(|(_, content)| content).collect();
        let mut texts: Vec<String> = PROBES.iter().map(|p| p.to_string()).collect();
        texts.push(specials.iter().map(|s| format!("{s}\n{}{s} x ", PROBES[0])).collect());
        let mut expected = Vec::new();
        for text_only in [false, true] {
            reference.set_encode_special_tokens(text_only);
            for text in &texts {
                let ids = reference
                    .encode_fast(text.as_str(), false)
                    .map_err(|e| format!("{OLD_ENGINE} failed on a probe text: {e}"))?;
                expected.push((text.clone(), text_only, ids.get_ids().to_vec()));
            }
        }
        Ok(ProbeIds(expected))
    }
}

pub(crate) struct Fast {
    tokenizer: PipelineTokenizer,
    spellings: Result<Spellings, String>,
}

fn options(text_only: bool) -> EncodeOptions {
    EncodeOptions {
        add_special_tokens: false,
        encode_special_tokens: text_only,
        ..EncodeOptions::default()
    }
}

/// Where the canonical form of a tokenizer.json is cached.
const CANONICAL: &str = "canonical-tokenizer.json";

fn load_engine(text: &str, cache: &Entry) -> Result<PipelineTokenizer, String> {
    if let Some(Ok(tokenizer)) = cache.read(CANONICAL).map(|canonical| tokv1::from_json(&canonical)) {
        return Ok(tokenizer);
    }
    tokv1::from_json(text).or_else(|direct| {
        // A tokenizer.json written by an older library version needs the upgrade pass (every
        // one on the Hub today: ~0.6 s for a 150k vocabulary, hence the cache).
        let canonical = tokv1::canonicalize_str(text).map_err(|_| direct.to_string())?;
        let tokenizer = tokv1::from_json(&canonical).map_err(|e| e.to_string())?;
        cache.write(CANONICAL, &canonical);
        Ok(tokenizer)
    })
}

impl Fast {
    /// Builds the 1.0 engine for a tokenizer.json text, or says why it cannot. Check it with
    /// [`Fast::agrees_with`] before use.
    pub(crate) fn load_tokenizer(text: &str, cache: &Entry) -> Result<PipelineTokenizer, String> {
        if !Self::wanted() {
            return Err("SFTPACK_TOKENIZER_ENGINE=0.23 is set".into());
        }
        load_engine(text, cache).map_err(|e| format!("{FAST_ENGINE} cannot load this tokenizer: {e}"))
    }

    /// Whether the 1.0 engine may be used at all.
    pub(crate) fn wanted() -> bool {
        !std::env::var("SFTPACK_TOKENIZER_ENGINE").is_ok_and(|v| v.trim() == "0.23")
    }

    pub(crate) fn new(tokenizer: PipelineTokenizer, spellings: Result<Spellings, String>) -> Self {
        Fast { tokenizer, spellings }
    }

    /// Whether the 1.0 engine gives the ids 0.23 gave on the probes (see [`ProbeIds`]).
    pub(crate) fn agrees_with(&self, expected: &ProbeIds) -> Result<(), String> {
        for (text, text_only, ids) in &expected.0 {
            let got = self.ids(text, *text_only).map_err(|p| p.message)?;
            if got != *ids {
                return Err(format!(
                    "{FAST_ENGINE} gives other ids than {OLD_ENGINE} for {text:?} (encode_special_tokens={text_only})"
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn ids(&self, text: &str, text_only: bool) -> Result<Vec<u32>, Problem> {
        let mut out: Vec<PipelineToken> = Vec::with_capacity(text.len() / 3);
        self.tokenizer
            .encode_into(text, &options(text_only), &mut out)
            .map_err(|e| Problem::new("tokenizer_error", "", format!("the tokenizer failed: {e}")))?;
        // Same size and alignment: the collect reuses the buffer instead of copying the ids.
        Ok(out.into_iter().map(u32::from).collect())
    }

    pub(crate) fn starts(&self, ids: &[u32], text: &str) -> Option<Vec<usize>> {
        self.spellings.as_ref().ok()?.starts(ids, text)
    }
}

/// Texts encoded with token starts, by where the starts came from.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    derived: AtomicU64,
    fell_back: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, fell_back: bool) {
        let counter = if fell_back { &self.fell_back } else { &self.derived };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, fast: &Result<Fast, String>) -> EngineReport {
        let (engine, note) = match fast {
            Ok(fast) => (
                FAST_ENGINE,
                fast.spellings
                    .as_ref()
                    .err()
                    .map(|why| format!("token starts come from {OLD_ENGINE}: {why}")),
            ),
            Err(why) => (OLD_ENGINE, Some(why.clone())),
        };
        EngineReport {
            engine: engine.to_string(),
            note,
            texts_with_starts: self.derived.load(Ordering::Relaxed) + self.fell_back.load(Ordering::Relaxed),
            starts_from_old_engine: self.fell_back.load(Ordering::Relaxed),
        }
    }
}

/// Which tokenizer engine a job used. Output is the same with either; this is for speed and
/// for finding out why a job was slow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineReport {
    /// "tokenizers 1.0.0-rc.3", or "tokenizers 0.23" when the tokenizer goes through it whole.
    pub engine: String,
    /// Why the tokenizer (or its token starts) goes through 0.23, if it does.
    pub note: Option<String>,
    /// Texts (one per record with a Jinja template) encoded with token starts.
    pub texts_with_starts: u64,
    /// Of those, how many needed 0.23 for their starts (their ids did not spell the text exactly,
    /// e.g. after a normalizer changed it).
    pub starts_from_old_engine: u64,
}
