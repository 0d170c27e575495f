//! Engine pipelines: the 1.0 engine built on a thread of its own while a job starts, checked
//! against tokenizers 0.23 (the probe check, its verdict cached), and 0.23 loaded only where a
//! text needs it. [`super::TokenizerBundle`] holds one pipeline per tokenizer flavor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use std::str::FromStr;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::{cache, engine, spelling, TokenizerBundle, Tokens};
use crate::error::Problem;

/// The 0.23 engine for one pipeline: what the 1.0 engine cannot do (token starts it cannot
/// derive, decoding), and the whole job when 1.0 cannot take the tokenizer.
pub(super) struct OldEngine {
    pub(super) normal: Tokenizer,
    /// The same tokenizer with special-token matching off, for text that must stay text.
    pub(super) text_only: Tokenizer,
}

impl OldEngine {
    pub(super) fn load(source: &str) -> std::result::Result<Self, String> {
        let normal = Tokenizer::from_str(source).map_err(|e| e.to_string())?;
        let mut text_only = normal.clone();
        text_only.set_encode_special_tokens(true);
        Ok(OldEngine { normal, text_only })
    }
}

/// Where the probe check's verdict is cached: "agrees", or "differs" and the reason.
pub(super) const VERDICT: &str = "probe-verdict.txt";

pub(super) type FastResult = std::result::Result<engine::Fast, String>;

/// The 1.0 engine of a pipeline. Its build (~0.4 s for a 150k vocabulary, in the engine's own
/// reader) runs on a thread of its own from the moment the tokenizer is opened, so a job reads
/// and renders records meanwhile; it is joined and checked the first time it is needed.
pub(super) struct FastSlot {
    pub(super) ready: OnceLock<FastResult>,
    pub(super) finish: Mutex<Option<Box<dyn FnOnce() -> FastResult + Send>>>,
    pub(super) built: Arc<Built>,
}

/// Whether the build thread is done, and how long it took.
#[derive(Default)]
pub(super) struct Built {
    pub(super) done: AtomicBool,
    pub(super) nanos: AtomicU64,
}

impl FastSlot {
    pub(super) fn get(&self) -> &FastResult {
        self.ready.get_or_init(|| {
            let finish = self.finish.lock().ok().and_then(|mut f| f.take());
            finish.map_or_else(|| Err(format!("{} did not load", engine::FAST_ENGINE)), |f| f())
        })
    }

    /// Whether `get` would return without waiting for the build.
    pub(super) fn is_built(&self) -> bool {
        self.ready.get().is_some() || self.built.done.load(Ordering::Acquire)
    }
}

pub(super) struct Pipeline {
    /// The tokenizer.json text both engines load.
    pub(super) source: Arc<str>,
    /// Loaded on first need: with the 1.0 engine and a cached probe verdict, a job may never
    /// need 0.23 (its load is ~0.4 s of a 150k-vocabulary tokenizer's start-up).
    pub(super) old: OnceLock<std::result::Result<OldEngine, String>>,
    /// The 1.0 engine for this pipeline, or why it is not used.
    pub(super) fast: FastSlot,
}

/// Whether 1.0 may encode: the cached verdict of the probe check, else the check itself against
/// the ids 0.23 gave (`probes`, computed before the engine was built; here if they were not).
fn checked(fast: engine::Fast, probes: Option<ProbeResult>, source: &str, cache: &cache::Entry) -> FastResult {
    match cache
        .read(VERDICT)
        .as_deref()
        .map(|v| v.split_once('\n').unwrap_or((v, "")))
    {
        Some(("agrees", _)) => Ok(fast),
        Some(("differs", why)) => Err(why.to_string()),
        _ => {
            let expected = probes.unwrap_or_else(|| engine::ProbeIds::compute(source))?;
            let verdict = fast.agrees_with(&expected);
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

type ProbeResult = std::result::Result<engine::ProbeIds, String>;

/// What the build thread makes: the 1.0 engine, and the probe ids when no verdict is cached.
type BuildResult = (
    std::result::Result<engine::PipelineTokenizer, String>,
    Option<ProbeResult>,
);

/// The probes' ids from 0.23, then the 1.0 engine, one after the other on one thread: the 0.23
/// load is freed before the engine is built, so the two never take memory at once.
fn build(source: &str, cache: &cache::Entry) -> BuildResult {
    let probes = (engine::Fast::wanted() && cache.read(VERDICT).is_none()).then(|| engine::ProbeIds::compute(source));
    let built = (engine::Fast::load_tokenizer(source, cache), probes);
    return_freed_memory();
    built
}

/// Hands the pages this thread freed back to the system. glibc keeps a thread's freed memory in
/// that thread's arena, where no worker thread reuses it: without this, the transient memory of
/// the probe check and a first build (~50 MB for a 150k vocabulary) stays resident all job long.
#[allow(unsafe_code)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only releases free pages; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Pipeline {
    /// Starts building the 1.0 engine for `source` on its own thread and returns at once;
    /// [`PipelineStart::finish`] makes the pipeline.
    pub(super) fn start(source: Arc<str>, cache: &cache::Entry) -> PipelineStart {
        let built = Arc::new(Built::default());
        let building = {
            let (source, built, cache) = (Arc::clone(&source), Arc::clone(&built), cache.clone());
            std::thread::Builder::new()
                .name("sftpack-tokenizer".into())
                .spawn(move || {
                    let started = std::time::Instant::now();
                    let made = build(&source, &cache);
                    built
                        .nanos
                        .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    built.done.store(true, Ordering::Release);
                    made
                })
        };
        PipelineStart {
            source,
            building,
            built,
        }
    }

    /// The 0.23 engine, loaded on first use.
    pub(super) fn old(&self) -> std::result::Result<&OldEngine, String> {
        self.old
            .get_or_init(|| OldEngine::load(&self.source))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The 1.0 engine, or why not; where it is not used, 0.23 must load (else an error).
    pub(super) fn ready(&self) -> std::result::Result<(), String> {
        match self.fast.get() {
            Ok(_) => Ok(()),
            Err(_) => self.old().map(|_| ()),
        }
    }

    /// Encodes one piece of text, with the 1.0 engine where it can (waiting for its build);
    /// the flag says the record needed 0.23 for its token starts.
    pub(super) fn encode(
        &self,
        text: &str,
        text_only: bool,
        offsets: bool,
    ) -> std::result::Result<(Tokens, bool), Problem> {
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
pub(super) struct PipelineStart {
    pub(super) source: Arc<str>,
    pub(super) building: std::io::Result<std::thread::JoinHandle<BuildResult>>,
    pub(super) built: Arc<Built>,
}

impl PipelineStart {
    /// The pipeline, given the parsed tokenizer.json (for token starts): its engine is joined,
    /// and checked against 0.23 (see [`checked`]), when first needed.
    pub(super) fn finish(self, json: &Value, cache: cache::Entry) -> Pipeline {
        let spellings = spelling::Spellings::from_tokenizer_json(json);
        let PipelineStart {
            source,
            building,
            built,
        } = self;
        let checked_source = Arc::clone(&source);
        let finish = move || {
            let (tokenizer, probes) = match building {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| (Err(format!("{} panicked while loading", engine::FAST_ENGINE)), None)),
                // No thread to spare: build it here, when first needed.
                Err(_) => build(&checked_source, &cache),
            };
            let fast = engine::Fast::new(tokenizer?, spellings);
            checked(fast, probes, &checked_source, &cache)
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
