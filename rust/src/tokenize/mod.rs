//! Tokenize: load a Hugging Face tokenizer directory and encode rendered text exactly as
//! transformers does (`add_special_tokens=False` on the rendered chat), with byte offsets.
//!
//! One difference by design: text inside message content that spells a special token (say a
//! user pasting `<|im_end|>`) stays text, so data cannot inject control tokens. Callers pass the
//! byte ranges of content; special tokens found there are encoded as plain text.
//!
//! `folder` reads the tokenizer folder (tokenizer.json, its config, the chat template);
//! `pipeline` builds and checks the engines that encode (`engine`: tokenizers 1.0, with 0.23
//! where it must); `cache` keeps what a tokenizer's first job prepared for later ones.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use serde_json::Value;
use sha2::{Digest, Sha256};

use tokenizers::Tokenizer;

use crate::error::{Error, Problem, Result};
use crate::read::read_to_string;

mod cache;
mod engine;
mod folder;
mod outline;
mod pipeline;
mod spelling;

use folder::{
    added_around_text, load_chat_template, locate_tokenizer_json, missing_tokenizer_error, read_json_object,
    token_string, transformers_llama_rebuild, CONFIG_FILES,
};
use pipeline::Pipeline;

pub use engine::EngineReport;

/// The special-token strings a tokenizer config names (`bos_token`, `eos_token`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

/// A loaded tokenizer with what templates and XTuner's rules need from its config.
pub struct TokenizerBundle {
    /// How many texts needing token starts each engine encoded.
    engine: engine::Counters,
    /// The pipeline current transformers builds for this tokenizer.
    current: Pipeline,
    /// The pipeline exactly as tokenizer.json describes it, as transformers 4.x loaded it (and
    /// so XTuner 0.2.0); `None` when it is the same as `current`.
    as_file: Option<Pipeline>,
    /// The special tokens transformers' `tokenizer(text)` adds before and after a text.
    pub added_around_text: (Vec<u32>, Vec<u32>),
    vocabulary: Vocabulary,
    special_matcher: Option<AhoCorasick>,
    pub special: SpecialTokens,
    /// `tokenizer_class` from tokenizer_config.json (XTuner's BOS rule depends on it).
    pub tokenizer_class: Option<String>,
    /// The chat template shipped with the tokenizer, if any.
    pub chat_template: Option<String>,
    /// Extra `tokenizer_config.json` keys passed to templates.
    pub config: serde_json::Map<String, Value>,
    /// sha256 of tokenizer.json: identifies the vocabulary in manifests.
    pub sha256: String,
    /// (file name, sha256) of every file the tokenizer was loaded from: tokenizer.json and the
    /// config and chat template files beside it. A pack's key covers them all, since any of
    /// them can change the ids.
    pub files: Vec<(String, String)>,
    pub path: PathBuf,
}

/// What tokenizer.json says about its vocabulary, read once so that looking up special tokens
/// and the vocabulary size needs neither engine.
struct Vocabulary {
    /// Added tokens by content.
    added: std::collections::HashMap<String, u32>,
    /// Contents of the added tokens marked special.
    specials: Vec<String>,
    /// Model vocabulary plus added tokens not in it (as the tokenizers library counts).
    size: usize,
}

impl Vocabulary {
    fn from_json(json: &Value) -> Self {
        let mut added = std::collections::HashMap::new();
        let mut specials = Vec::new();
        for token in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
            let (Some(content), Some(id)) = (
                token.get("content").and_then(Value::as_str),
                token
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok()),
            ) else {
                continue;
            };
            if token.get("special").and_then(Value::as_bool) == Some(true) && !content.is_empty() {
                specials.push(content.to_string());
            }
            added.insert(content.to_string(), id);
        }
        let model: std::collections::HashSet<&str> = match json.pointer("/model/vocab") {
            Some(Value::Object(pieces)) => pieces.keys().map(String::as_str).collect(),
            // Unigram: [[piece, score], ...]
            Some(Value::Array(pieces)) => pieces.iter().filter_map(|p| p.get(0)?.as_str()).collect(),
            _ => std::collections::HashSet::new(),
        };
        let size = model.len() + added.keys().filter(|t| !model.contains(t.as_str())).count();
        Vocabulary { added, specials, size }
    }
}

/// Which tokenizer pipeline to encode with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// As current transformers loads the tokenizer (used with Jinja chat templates).
    Transformers,
    /// As tokenizer.json describes it, the way transformers 4.x and so XTuner loaded it.
    AsFile,
}

/// Ids and where each token starts in the encoded text (byte offset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub starts: Vec<usize>,
}

impl Tokens {
    fn extend_shifted(&mut self, other: Tokens, shift: usize) {
        self.ids.extend(other.ids);
        self.starts.extend(other.starts.into_iter().map(|s| s + shift));
    }
}

impl TokenizerBundle {
    /// Loads a tokenizer directory, or a tokenizer.json file (its directory supplies the config),
    /// and waits until it can encode.
    pub fn load(path: &Path) -> Result<Self> {
        let tokenizer = Self::open(path)?;
        tokenizer.ready()?;
        Ok(tokenizer)
    }

    /// [`TokenizerBundle::load`] without the wait: the template, special tokens and vocabulary
    /// are usable at once, while the 1.0 engine goes on building (~0.4 s for a 150k vocabulary).
    /// Encoding waits for it; call [`TokenizerBundle::ready`] first to get load errors as errors.
    pub fn open(path: &Path) -> Result<Self> {
        let (dir, json_path) = if path.is_dir() {
            let json = locate_tokenizer_json(path).ok_or_else(|| missing_tokenizer_error(path))?;
            (path.to_path_buf(), json)
        } else if path.is_file() {
            (
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.to_path_buf(),
            )
        } else {
            return Err(Error::tokenizer(format!(
                "tokenizer path {} does not exist",
                path.display()
            )));
        };
        let text = read_to_string(&json_path)?;
        let unloadable = |e: &dyn std::fmt::Display| {
            Error::tokenizer(format!(
                "{} is not a tokenizer.json that the tokenizers library can load: {e}",
                json_path.display()
            ))
        };
        let sha256 = hex_sha256(text.as_bytes());
        let cache = cache::Entry::for_tokenizer(&sha256);
        let text: Arc<str> = Arc::from(text);
        // The 1.0 engine builds on its own thread while serde parses the same text, and goes on
        // building while a job reads and renders records (see `ready`).
        let as_written = Pipeline::start(Arc::clone(&text), &cache);
        let json = outline::parse_without_merges(&text).map_err(|e| unloadable(&e))?;
        let vocabulary = Vocabulary::from_json(&json);
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json_object(&config_path)?
        } else {
            serde_json::Map::new()
        };
        let as_written = as_written.finish(&json, cache);
        let rebuilt = transformers_llama_rebuild(&text, &json, &config);
        let around_text = added_around_text(rebuilt.as_ref().unwrap_or(&json));
        let rebuilt = rebuilt.map(|rebuilt| {
            let text = rebuilt.to_string();
            let cache = cache::Entry::for_tokenizer(&hex_sha256(text.as_bytes()));
            Pipeline::start(Arc::from(text), &cache).finish(&rebuilt, cache)
        });
        let (current, as_file) = match rebuilt {
            Some(current) => (current, Some(as_written)),
            None => (as_written, None),
        };
        let chat_template = load_chat_template(&dir, &config)?;
        let name = json_path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let mut files = vec![(name, sha256)];
        for name in CONFIG_FILES {
            let path = dir.join(name);
            if path.is_file() {
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                files.push((name.to_string(), hex_sha256(&bytes)));
            }
        }
        Ok(Self::assemble(
            current,
            as_file,
            around_text,
            vocabulary,
            config,
            chat_template,
            files,
            json_path,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        current: Pipeline,
        as_file: Option<Pipeline>,
        added_around_text: (Vec<u32>, Vec<u32>),
        vocabulary: Vocabulary,
        config: serde_json::Map<String, Value>,
        chat_template: Option<String>,
        files: Vec<(String, String)>,
        path: PathBuf,
    ) -> Self {
        let special = SpecialTokens {
            bos_token: token_string(config.get("bos_token")),
            eos_token: token_string(config.get("eos_token")),
            unk_token: token_string(config.get("unk_token")),
            pad_token: token_string(config.get("pad_token")),
        };
        let specials = &vocabulary.specials;
        let special_matcher = AhoCorasick::new(specials).ok().filter(|_| !specials.is_empty());
        TokenizerBundle {
            engine: engine::Counters::default(),
            current,
            as_file,
            added_around_text,
            vocabulary,
            special_matcher,
            special,
            tokenizer_class: config
                .get("tokenizer_class")
                .and_then(Value::as_str)
                .map(str::to_string),
            chat_template,
            config,
            sha256: files.first().map(|(_, sha)| sha.clone()).unwrap_or_default(),
            files,
            path,
        }
    }

    /// The pipeline that encodes, and the as-written one beside it if the file was rebuilt.
    fn pipelines(&self) -> impl Iterator<Item = &Pipeline> {
        std::iter::once(&self.current).chain(&self.as_file)
    }

    /// Waits until the tokenizer can encode: the 1.0 engine built and checked, or 0.23 loaded
    /// where 1.0 is not used. An error is a tokenizer.json neither engine can load.
    pub fn ready(&self) -> Result<()> {
        for pipeline in self.pipelines() {
            pipeline.ready().map_err(|e| {
                Error::tokenizer(format!(
                    "{} is not a tokenizer.json that the tokenizers library can load: {e}",
                    self.path.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Seconds the 1.0 engine took to build on its own thread (0 until it is built).
    pub fn engine_build_seconds(&self) -> f64 {
        self.pipelines()
            .map(|pipeline| pipeline.fast.built.nanos.load(Ordering::Relaxed) as f64 / 1e9)
            .sum()
    }

    /// Whether encoding would start without waiting for the 1.0 engine's build.
    pub fn engine_built(&self) -> bool {
        self.pipelines().all(|pipeline| pipeline.fast.is_built())
    }

    /// The id of a token (added tokens first, as the tokenizers library looks them up).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some(&id) = self.vocabulary.added.get(token) {
            return Some(id);
        }
        self.current.old().ok()?.normal.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.current.old().ok()?.normal.id_to_token(id)
    }

    /// Vocabulary size with added tokens (transformers' `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.vocabulary.size
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.current
            .old()
            .ok()
            .and_then(|old| old.normal.decode(ids, false).ok())
            .unwrap_or_default()
    }

    /// Special-token strings that occur inside `text`, as byte ranges.
    pub fn special_tokens_in(&self, text: &str) -> Vec<Range<usize>> {
        match &self.special_matcher {
            Some(m) => m.find_iter(text).map(|found| found.range()).collect(),
            None => Vec::new(),
        }
    }

    fn encode_with(tokenizer: &Tokenizer, text: &str, offsets: bool) -> std::result::Result<Tokens, Problem> {
        let encoding = if offsets {
            tokenizer.encode(text, false)
        } else {
            tokenizer.encode_fast(text, false)
        }
        .map_err(|e| Problem::new("tokenizer_error", "", format!("the tokenizer failed: {e}")))?;
        let starts = if offsets {
            encoding.get_offsets().iter().map(|o| o.0).collect()
        } else {
            Vec::new()
        };
        Ok(Tokens {
            ids: encoding.get_ids().to_vec(),
            starts,
        })
    }

    /// Encodes `text` without adding special tokens. Special tokens spelled inside `content`
    /// ranges are encoded as text. `offsets` = false skips token starts (faster).
    pub fn encode(
        &self,
        flavor: Flavor,
        text: &str,
        content: &[Range<usize>],
        offsets: bool,
    ) -> std::result::Result<Tokens, Problem> {
        let pipeline = match (flavor, &self.as_file) {
            (Flavor::AsFile, Some(as_file)) => as_file,
            _ => &self.current,
        };
        let injected: Vec<Range<usize>> = content
            .iter()
            .flat_map(|range| {
                self.special_tokens_in(&text[range.clone()])
                    .into_iter()
                    .map(move |r| r.start + range.start..r.end + range.start)
            })
            .collect();
        let mut tokens = Tokens::default();
        let mut fell_back = false;
        let mut push = |range: Range<usize>, text_only: bool| {
            let (piece, piece_fell_back) = pipeline.encode(&text[range.clone()], text_only, offsets)?;
            fell_back |= piece_fell_back;
            tokens.extend_shifted(piece, range.start);
            Ok::<(), Problem>(())
        };
        let mut cursor = 0;
        for range in injected {
            if range.start > cursor {
                push(cursor..range.start, false)?;
            }
            push(range.clone(), true)?;
            cursor = range.end;
        }
        if cursor < text.len() || text.is_empty() {
            push(cursor..text.len(), false)?;
        }
        if offsets {
            self.engine.count(fell_back);
        }
        Ok(tokens)
    }

    /// Which engine encodes, why not the fast one if not, and how many texts needed 0.23 for
    /// their token starts.
    pub fn engine_report(&self) -> EngineReport {
        self.engine.report(self.current.fast.get())
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
