//! Tokenize: load a Hugging Face tokenizer directory and encode rendered text exactly as
//! transformers does (`add_special_tokens=False` on the rendered chat), with byte offsets.
//!
//! One difference by design: text inside message content that spells a special token (say a
//! user pasting `<|im_end|>`) stays text, so data cannot inject control tokens. Callers pass the
//! byte ranges of content; special tokens found there are encoded as plain text.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aho_corasick::AhoCorasick;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::str::FromStr;

use tokenizers::Tokenizer;

use crate::error::{Error, Problem, Result};
use crate::read::read_to_string;

mod cache;
mod engine;
mod outline;
mod spelling;

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

/// The 0.23 engine for one pipeline: what the 1.0 engine cannot do (token starts it cannot
/// derive, decoding), and the whole job when 1.0 cannot take the tokenizer.
struct OldEngine {
    normal: Tokenizer,
    /// The same tokenizer with special-token matching off, for text that must stay text.
    text_only: Tokenizer,
}

impl OldEngine {
    fn load(source: &str) -> std::result::Result<Self, String> {
        let normal = Tokenizer::from_str(source).map_err(|e| e.to_string())?;
        let mut text_only = normal.clone();
        text_only.set_encode_special_tokens(true);
        Ok(OldEngine { normal, text_only })
    }
}

/// Where the probe check's verdict is cached: "agrees", or "differs" and the reason.
const VERDICT: &str = "probe-verdict.txt";

type FastResult = std::result::Result<engine::Fast, String>;

/// The 1.0 engine of a pipeline. Its build (~0.4 s for a 150k vocabulary, in the engine's own
/// reader) runs on a thread of its own from the moment the tokenizer is opened, so a job reads
/// and renders records meanwhile; it is joined and checked the first time it is needed.
struct FastSlot {
    ready: OnceLock<FastResult>,
    finish: Mutex<Option<Box<dyn FnOnce() -> FastResult + Send>>>,
    built: Arc<Built>,
}

/// Whether the build thread is done, and how long it took.
#[derive(Default)]
struct Built {
    done: AtomicBool,
    nanos: AtomicU64,
}

impl FastSlot {
    fn get(&self) -> &FastResult {
        self.ready.get_or_init(|| {
            let finish = self.finish.lock().ok().and_then(|mut f| f.take());
            finish.map_or_else(|| Err(format!("{} did not load", engine::FAST_ENGINE)), |f| f())
        })
    }

    /// Whether `get` would return without waiting for the build.
    fn is_built(&self) -> bool {
        self.ready.get().is_some() || self.built.done.load(Ordering::Acquire)
    }
}

struct Pipeline {
    /// The tokenizer.json text both engines load.
    source: Arc<str>,
    /// Loaded on first need: with the 1.0 engine and a cached probe verdict, a job may never
    /// need 0.23 (its load is ~0.4 s of a 150k-vocabulary tokenizer's start-up).
    old: OnceLock<std::result::Result<OldEngine, String>>,
    /// The 1.0 engine for this pipeline, or why it is not used.
    fast: FastSlot,
}

/// Whether 1.0 may encode: the cached verdict of the probe check, else the check itself (which
/// loads 0.23 once, checks both special-token modes and drops it).
fn checked(fast: engine::Fast, source: &str, cache: &cache::Entry) -> FastResult {
    match cache
        .read(VERDICT)
        .as_deref()
        .map(|v| v.split_once('\n').unwrap_or((v, "")))
    {
        Some(("agrees", _)) => Ok(fast),
        Some(("differs", why)) => Err(why.to_string()),
        _ => {
            // A 0.23 load just for the check, dropped after it: most jobs never need 0.23
            // again, and it need not sit in memory beside the 1.0 engine.
            let mut reference = Tokenizer::from_str(source).map_err(|e| e.to_string())?;
            let verdict = fast.agrees_with(&mut reference);
            cache.write(
                VERDICT,
                &match &verdict {
                    Ok(()) => "agrees".to_string(),
                    Err(why) => format!("differs\n{why}"),
                },
            );
            verdict.map(|()| fast)
        }
    }
}

impl Pipeline {
    /// Starts building the 1.0 engine for `source` on its own thread and returns at once;
    /// [`PipelineStart::finish`] makes the pipeline.
    fn start(source: Arc<str>, cache: &cache::Entry) -> PipelineStart {
        let built = Arc::new(Built::default());
        let building = {
            let (source, built, cache) = (Arc::clone(&source), Arc::clone(&built), cache.clone());
            std::thread::Builder::new()
                .name("sftpack-tokenizer".into())
                .spawn(move || {
                    let started = std::time::Instant::now();
                    let tokenizer = engine::Fast::load_tokenizer(&source, &cache);
                    built
                        .nanos
                        .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    built.done.store(true, Ordering::Release);
                    tokenizer
                })
        };
        PipelineStart {
            source,
            building,
            built,
        }
    }

    /// The 0.23 engine, loaded on first use.
    fn old(&self) -> std::result::Result<&OldEngine, String> {
        self.old
            .get_or_init(|| OldEngine::load(&self.source))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The 1.0 engine, or why not; where it is not used, 0.23 must load (else an error).
    fn ready(&self) -> std::result::Result<(), String> {
        match self.fast.get() {
            Ok(_) => Ok(()),
            Err(_) => self.old().map(|_| ()),
        }
    }

    /// Encodes one piece of text, with the 1.0 engine where it can (waiting for its build);
    /// the flag says the record needed 0.23 for its token starts.
    fn encode(&self, text: &str, text_only: bool, offsets: bool) -> std::result::Result<(Tokens, bool), Problem> {
        if let Ok(fast) = self.fast.get() {
            let ids = fast.ids(text, text_only)?;
            if !offsets {
                return Ok((
                    Tokens {
                        ids,
                        starts: Vec::new(),
                    },
                    false,
                ));
            }
            if let Some(starts) = fast.starts(&ids, text) {
                return Ok((Tokens { ids, starts }, false));
            }
        }
        let old = self.old().map_err(|e| {
            Problem::new(
                "tokenizer_error",
                "",
                format!("{} cannot load the tokenizer: {e}", engine::OLD_ENGINE),
            )
        })?;
        let tokenizer = if text_only { &old.text_only } else { &old.normal };
        let fell_back = self.fast.get().is_ok() && offsets;
        Ok((TokenizerBundle::encode_with(tokenizer, text, offsets)?, fell_back))
    }
}

/// A pipeline whose 1.0 engine is being built; [`PipelineStart::finish`] adds what the parsed
/// tokenizer.json gives.
struct PipelineStart {
    source: Arc<str>,
    building: std::io::Result<std::thread::JoinHandle<std::result::Result<engine::PipelineTokenizer, String>>>,
    built: Arc<Built>,
}

impl PipelineStart {
    /// The pipeline, given the parsed tokenizer.json (for token starts): its engine is joined,
    /// and checked against 0.23 (see [`checked`]), when first needed.
    fn finish(self, json: &Value, cache: cache::Entry) -> Pipeline {
        let spellings = spelling::Spellings::from_tokenizer_json(json);
        let PipelineStart {
            source,
            building,
            built,
        } = self;
        let checked_source = Arc::clone(&source);
        let finish = move || {
            let tokenizer = match building {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(format!("{} panicked while loading", engine::FAST_ENGINE))),
                // No thread to spare: build it here, when first needed.
                Err(_) => engine::Fast::load_tokenizer(&checked_source, &cache),
            };
            let fast = engine::Fast::new(tokenizer?, spellings);
            checked(fast, &checked_source, &cache)
        };
        Pipeline {
            source,
            old: OnceLock::new(),
            fast: FastSlot {
                ready: OnceLock::new(),
                finish: Mutex::new(Some(Box::new(finish))),
                built,
            },
        }
    }
}

const LLAMA_CLASSES: [&str; 4] = [
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "CodeLlamaTokenizer",
    "CodeLlamaTokenizerFast",
];

/// transformers 5 rebuilds SentencePiece-style Llama tokenizers from their vocabulary: no
/// normalizer, and a Metaspace pre-tokenizer whose prepend scheme follows `legacy` and
/// `add_prefix_space`. Returns the rewritten tokenizer.json (`text`, whose outline is `json`), or
/// None when nothing changes.
fn transformers_llama_rebuild(text: &str, json: &Value, config: &serde_json::Map<String, Value>) -> Option<Value> {
    let class = config.get("tokenizer_class").and_then(Value::as_str)?;
    if !LLAMA_CLASSES.contains(&class) {
        return None;
    }
    let sentencepiece_style = json
        .get("normalizer")
        .is_some_and(|n| n.to_string().contains("\"Prepend\""))
        || json.pointer("/pre_tokenizer/type").and_then(Value::as_str) == Some("Metaspace");
    if !sentencepiece_style {
        return None;
    }
    let legacy = config.get("legacy").and_then(Value::as_bool).unwrap_or(false);
    let add_prefix_space = config.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true);
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => "never",
        (true, true) => "always",
        (true, false) => "first",
    };
    let mut rebuilt: Value = serde_json::from_str(text).ok()?;
    let map = rebuilt.as_object_mut()?;
    map.insert("normalizer".into(), Value::Null);
    map.insert(
        "pre_tokenizer".into(),
        serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": scheme, "split": false}),
    );
    Some(rebuilt)
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

fn locate_tokenizer_json(dir: &Path) -> Option<PathBuf> {
    ["tokenizer.json", "tokenizer.json.gz"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

fn missing_tokenizer_error(dir: &Path) -> Error {
    let spm = ["tokenizer.model"].iter().any(|n| dir.join(n).is_file())
        || std::fs::read_dir(dir).ok().is_some_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".model"))
        });
    let hint = if spm {
        format!(
            "this directory has a SentencePiece model only; convert it once with `sftpack convert-tokenizer {}`, which writes tokenizer.json beside it",
            dir.display()
        )
    } else {
        "point `tokenizer` at a Hugging Face tokenizer directory (with tokenizer.json) or at a tokenizer.json file"
            .to_string()
    };
    Error::tokenizer(format!("no tokenizer.json in {}", dir.display())).hint(hint)
}

/// A config token is a string or an AddedToken object `{"content": ...}`.
fn token_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` may be a string or a list of named templates (the "default" one is used).
fn template_from_config(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| items.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

fn read_json_object(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = read_to_string(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::tokenizer(format!("{} is not a JSON object", path.display()))),
        Err(e) => Err(Error::tokenizer(format!("{} is not valid JSON: {e}", path.display()))),
    }
}

/// The files beside tokenizer.json that the engine reads: special tokens, the tokenizer class,
/// `legacy`/`add_prefix_space`, and the chat template.
const CONFIG_FILES: [&str; 3] = ["tokenizer_config.json", "chat_template.jinja", "chat_template.json"];

fn load_chat_template(dir: &Path, config: &serde_json::Map<String, Value>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return read_to_string(&jinja).map(Some);
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let map = read_json_object(&json)?;
        return Ok(template_from_config(map.get("chat_template")));
    }
    Ok(template_from_config(config.get("chat_template")))
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
        let rebuilt = transformers_llama_rebuild(&text, &json, &config).map(|rebuilt| {
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
            vocabulary,
            config,
            chat_template,
            files,
            json_path,
        ))
    }

    fn assemble(
        current: Pipeline,
        as_file: Option<Pipeline>,
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
