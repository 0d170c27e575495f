//! Pipeline: the one loop every job runs. Records are read in order on the calling thread and
//! parsed, templated, tokenized and masked in batches on a thread pool; results come back in
//! input order, so what a job produces never depends on the thread count.

use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::encode::{EncodeOptions, Encoder, Outcome, Prepared};
use crate::error::{Error, Result};
use crate::map::{map_records, MapFnIdentity, RecordMapper};
use crate::profile::{self, Stage};
use crate::read::{self, RawRecord, UnitReport, WorkUnit};
use crate::schema::{self, Format};
use crate::template::ChatTemplate;
use crate::tokenize::TokenizerBundle;

/// A job's inputs and settings, as sent from Python.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub inputs: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    #[serde(default)]
    pub template: Option<String>,
    /// The template's full source as a manifest records it; when given, `template` only names
    /// it (see [`ChatTemplate::from_record`]).
    #[serde(default)]
    pub template_source: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub encode: EncodeOptions,
    #[serde(default)]
    pub threads: Option<usize>,
    /// How many examples to keep per problem kind.
    #[serde(default = "default_examples")]
    pub examples_per_kind: usize,
    /// The map function records go through first, if any (the function itself is passed to the
    /// run beside this config).
    #[serde(default)]
    pub map_fn: Option<MapFnIdentity>,
}

pub(crate) fn default_examples() -> usize {
    5
}

/// Builds the encoder a job config describes.
pub fn build_encoder(config: &JobConfig) -> Result<Encoder> {
    let encoder = open_encoder(config)?;
    encoder.tokenizer.ready()?;
    Ok(encoder)
}

/// [`build_encoder`] for a streaming job: returns while the tokenizer's 1.0 engine is still
/// building (see [`TokenizerBundle::open`]); [`stream`] renders records meanwhile.
pub fn open_encoder(config: &JobConfig) -> Result<Encoder> {
    let tokenizer = TokenizerBundle::open(&config.tokenizer)?;
    let template = match &config.template_source {
        Some(source) => {
            ChatTemplate::from_record(config.template.as_deref().unwrap_or("recorded"), source, &tokenizer)?
        }
        None if forced_format(config)? == Some(Format::Text) => raw_text_template(config)?,
        None => ChatTemplate::resolve(config.template.as_deref(), &tokenizer)?,
    };
    Encoder::new(tokenizer, template, config.encode.clone())
}

/// Whether a job reads raw text (`format: text`), whose folders hold .txt documents too.
pub fn reads_raw_text(config: &JobConfig) -> bool {
    config.format.as_deref() == Some(Format::Text.name())
}

/// A raw-text job takes no chat template: naming one is a mistake worth saying.
fn raw_text_template(config: &JobConfig) -> Result<ChatTemplate> {
    match config.template.as_deref() {
        None | Some(crate::template::TOKENIZER_TEMPLATE | crate::template::RAW_TEXT_TEMPLATE) => {
            Ok(ChatTemplate::RawText)
        }
        Some(other) => Err(Error::config(format!(
            "`format: text` trains raw documents without a chat template, but `template` is {other:?}"
        ))
        .hint("leave `template` out for raw text, or use a chat format")),
    }
}

pub fn forced_format(config: &JobConfig) -> Result<Option<Format>> {
    config
        .format
        .as_deref()
        .map(|name| {
            Format::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                Error::config(format!("unknown format \"{name}\"; formats are {}", names.join(", ")))
            })
        })
        .transpose()
}

/// Parses and encodes one raw record.
pub fn process(raw: &RawRecord, format: Option<Format>, encoder: &Encoder) -> Outcome {
    finish(stage(raw, format, encoder), encoder)
}

/// A record parsed and rendered ([`Encoder::prepare`]), or already decided.
enum Staged {
    Ready(Prepared),
    Decided(Outcome),
}

fn finish(staged: Staged, encoder: &Encoder) -> Outcome {
    match staged {
        Staged::Ready(prepared) => encoder.finish(prepared),
        Staged::Decided(outcome) => outcome,
    }
}

/// One record's JSON text to its outcome: parsed, its conversation read in `format` (or the
/// one it names), encoded. The pipeline, `samples` and Python's `Encoder.encode` all go through it.
pub fn encode_record(text: &str, format: Option<Format>, encoder: &Encoder) -> Outcome {
    let staged = match profile::time(Stage::Parse, || schema::parse_json(text)) {
        Ok(record) => stage_object(&record, format, encoder),
        Err(p) => Staged::Decided(Outcome::Rejected(vec![p])),
    };
    finish(staged, encoder)
}

/// The first half of [`process`], which needs no tokenizer engine.
fn stage(raw: &RawRecord, format: Option<Format>, encoder: &Encoder) -> Staged {
    match profile::time(Stage::Parse, || raw.object()) {
        Ok(record) => stage_object(&record, format, encoder),
        Err(p) => Staged::Decided(Outcome::Rejected(vec![p])),
    }
}

fn stage_object(
    record: &serde_json::Map<String, serde_json::Value>,
    format: Option<Format>,
    encoder: &Encoder,
) -> Staged {
    let rejected = |problems| Staged::Decided(Outcome::Rejected(problems));
    if format == Some(Format::Text) {
        return match schema::raw_text(record) {
            Ok(text) => Staged::Ready(Prepared::Text(text.to_string())),
            Err(problems) => rejected(problems),
        };
    }
    match profile::time(Stage::Parse, || schema::record_conversation(record, format)) {
        Ok(conversation) => match encoder.prepare(conversation) {
            Ok(prepared) => Staged::Ready(prepared),
            Err(problems) => rejected(problems),
        },
        Err(problems) => rejected(problems),
    }
}

/// The format of a file: forced, or that of its first record that names one.
pub(crate) fn detect_format(batch: &[RawRecord]) -> Option<Format> {
    batch
        .iter()
        .filter_map(|r| r.object().ok())
        .find_map(|r| Format::detect(&r))
}

/// Records per batch handed to the thread pool: large enough that uneven record lengths even
/// out across threads.
const BATCH: usize = 4096;

/// How far a stream got, reported between batches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamProgress {
    pub records: u64,
    pub bytes_read: u64,
}

/// One part of a partitioned job: the work units (see [`crate::read::units`]) whose middle byte
/// falls in the `index`-th of `count` equal shares of the inputs. The work list does not depend
/// on `count`, so parts prepared anywhere join into exactly the documents of one unpartitioned
/// run, and together read the inputs about once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub count: u64,
    pub index: u64,
}

impl Partition {
    pub fn check(self) -> Result<Self> {
        if self.count == 0 || self.index >= self.count {
            return Err(Error::config(format!(
                "shard index {} is not below the number of shards {}",
                self.index, self.count
            ))
            .hint("shard indices run from 0 to num_shards - 1"));
        }
        Ok(self)
    }
}

/// What a job streams: its work units (with their ids in a partitioned run, which the records
/// then carry), the encoder, and the optional map function before it.
pub struct Source<'a> {
    pub units: &'a [(Option<u32>, WorkUnit)],
    pub forced: Option<Format>,
    pub encoder: &'a Encoder,
    pub mapper: Option<&'a dyn RecordMapper>,
    pub threads: Option<usize>,
    /// Where to put what reading each unit found out (lines, digests), by place in `units`.
    pub reports: Option<&'a std::sync::Mutex<Vec<Option<UnitReport>>>>,
}

impl<'a> Source<'a> {
    /// Every file read whole, from its start.
    pub fn whole_files(files: &[PathBuf]) -> Vec<(Option<u32>, WorkUnit)> {
        files
            .iter()
            .enumerate()
            .map(|(index, path)| (None, WorkUnit::whole(index as u32, path)))
            .collect()
    }
}

/// A record and its position in the job's stream.
pub struct Positioned {
    pub position: u64,
    pub raw: RawRecord,
}

/// The records of a batch the run encodes, not done by an earlier run (`already`), mapped.
/// While the unit's format is still to be detected the whole batch is mapped first, so a
/// resumed run detects what the first run did.
fn fresh_records(
    source: &Source<'_>,
    mut batch: Vec<RawRecord>,
    first: u64,
    already: usize,
    format: &mut Option<Format>,
) -> Result<Vec<Positioned>> {
    let detecting = format.is_none();
    if let (Some(mapper), true) = (source.mapper, detecting) {
        profile::time(Stage::Map, || map_records(mapper, &mut batch))?;
    }
    if detecting {
        *format = detect_format(&batch);
    }
    let (positions, mut records): (Vec<u64>, Vec<RawRecord>) = batch
        .into_iter()
        .enumerate()
        .map(|(j, raw)| (first + j as u64, raw))
        .filter(|(position, _)| *position >= first + already as u64)
        .unzip();
    if let (Some(mapper), false, false) = (source.mapper, detecting, records.is_empty()) {
        profile::time(Stage::Map, || map_records(mapper, &mut records))?;
    }
    Ok(positions
        .into_iter()
        .zip(records)
        .map(|(position, raw)| Positioned { position, raw })
        .collect())
}

/// A batch encoded and not yet handed to `on_record`.
struct EncodedBatch {
    format: Option<Format>,
    records: Vec<Positioned>,
    outcomes: Vec<Outcome>,
}

/// A batch parsed and rendered, not yet tokenized.
struct RenderedBatch {
    format: Option<Format>,
    records: Vec<Positioned>,
    staged: Vec<Staged>,
}

/// Batches rendered ahead while the tokenizer's 1.0 engine is still building: enough to keep a
/// worker busy through a build (~0.5 s; 10-30k records of a chat corpus), few enough to bound
/// memory (at most 8 × 4096 rendered records, ~20-40 MB of chat text).
const RENDERED_AHEAD: usize = 8;

/// Parses and renders a batch on the pool. While the tokenizer's engine builds, one worker fewer
/// takes part, so that the build (the job's longest serial step) keeps a core of its own.
fn stage_batch(records: &[Positioned], format: Option<Format>, encoder: &Encoder) -> Vec<Staged> {
    let stage_one = |r: &Positioned| stage(&r.raw, format, encoder);
    if encoder.tokenizer.engine_built() {
        return records.par_iter().map(stage_one).collect();
    }
    let workers = rayon::current_num_threads().saturating_sub(1).max(1);
    let chunk = records.len().div_ceil(workers).max(1);
    records
        .par_chunks(chunk)
        .flat_map_iter(|chunk| chunk.iter().map(stage_one))
        .collect()
}

/// Tokenizes the batches rendered so far (waiting for the engine if it still builds).
fn tokenize_rendered(ahead: &mut Vec<RenderedBatch>, encoder: &Encoder) -> Result<Vec<EncodedBatch>> {
    if ahead.is_empty() {
        return Ok(Vec::new());
    }
    profile::time(Stage::EngineWait, || encoder.tokenizer.ready())?;
    Ok(ahead
        .drain(..)
        .map(|batch| EncodedBatch {
            format: batch.format,
            records: batch.records,
            outcomes: batch.staged.into_par_iter().map(|s| finish(s, encoder)).collect(),
        })
        .collect())
}

type OnRecord<'a> = dyn FnMut(Option<Format>, Positioned, Outcome) -> Result<()> + 'a;

fn hand_over(batches: Vec<EncodedBatch>, on_record: &mut OnRecord<'_>) -> Result<()> {
    profile::time(Stage::Write, || {
        batches.into_iter().try_for_each(|batch| {
            let format = batch.format;
            batch
                .records
                .into_iter()
                .zip(batch.outcomes)
                .try_for_each(|(record, outcome)| on_record(format, record, outcome))
        })
    })
}

/// Streams every record of the source's units through its encoder, skipping the first `skip`
/// records (done by an earlier run) without encoding them. `on_record` gets each result in input order; `on_batch` is called after every
/// batch and stops the stream with `Error::Interrupted` when it returns false.
///
/// While the pool encodes a batch, this thread hands the previous batch's results to
/// `on_record` (packing and writing), so the two overlap. Until the tokenizer's engine is built,
/// the pool renders batches ahead and tokenizes them once it is. A stop hands over everything
/// read so far first, so a resumed run redoes no more than before.
pub fn stream(
    source: &Source<'_>,
    skip: u64,
    on_record: &mut OnRecord<'_>,
    on_batch: &mut dyn FnMut(&StreamProgress) -> bool,
) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(source.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::config(format!("cannot start worker threads: {e}")))?;
    let encoder = source.encoder;
    let mut progress = StreamProgress::default();
    let read_before = profile::input_bytes();
    let mut pending: Vec<EncodedBatch> = Vec::new();
    let mut ahead: Vec<RenderedBatch> = Vec::new();
    // Hands over everything read so far: at the end, and before a stop.
    let hand_over_all = |pending: Vec<EncodedBatch>, ahead: &mut Vec<RenderedBatch>, on_record: &mut OnRecord<'_>| {
        hand_over(pending, on_record)?;
        let rest = pool.install(|| tokenize_rendered(ahead, encoder))?;
        hand_over(rest, on_record)
    };
    for (place, (id, unit)) in source.units.iter().enumerate() {
        let mut format = source.forced;
        if read::layout_of(&unit.path) == read::Layout::PlainText && format != Some(Format::Text) {
            return Err(Error::config(format!(
                "{} is a plain text file: raw documents train with `format: text`",
                unit.path.display()
            ))
            .hint("pass --format text (continued pretraining), or convert the file to chat records"));
        }
        let (mut records, report) = read::units::open(unit, *id)?;
        loop {
            let batch: Vec<RawRecord> =
                profile::time(Stage::Read, || records.by_ref().take(BATCH).collect::<Result<_>>())?;
            if batch.is_empty() {
                break;
            }
            // What the files gave up so far (compressed and columnar bytes too), against their sizes.
            // Saturating: another job in this process may reset the shared counter meanwhile.
            progress.bytes_read = profile::input_bytes().saturating_sub(read_before);
            let first = progress.records;
            let already = skip.saturating_sub(first).min(batch.len() as u64) as usize;
            progress.records += batch.len() as u64;
            let fresh = match fresh_records(source, batch, first, already, &mut format) {
                Ok(fresh) => fresh,
                Err(error) => {
                    // Stopped while mapping (Ctrl-C in a map function): keep what is read.
                    hand_over_all(std::mem::take(&mut pending), &mut ahead, on_record)?;
                    return Err(error);
                }
            };
            let (encoded, handed) = std::thread::scope(|scope| {
                let working = scope.spawn(|| {
                    pool.install(|| {
                        let staged = stage_batch(&fresh, format, encoder);
                        ahead.push(RenderedBatch {
                            format,
                            records: fresh,
                            staged,
                        });
                        if ahead.len() < RENDERED_AHEAD && !encoder.tokenizer.engine_built() {
                            return Ok(Vec::new());
                        }
                        tokenize_rendered(&mut ahead, encoder)
                    })
                });
                let handed = hand_over(std::mem::take(&mut pending), on_record);
                (working.join(), handed)
            });
            handed?;
            pending = encoded.map_err(|_| Error::output("a worker thread panicked while encoding"))??;
            if !on_batch(&progress) {
                hand_over_all(std::mem::take(&mut pending), &mut ahead, on_record)?;
                return Err(Error::Interrupted);
            }
        }
        if let Some(reports) = source.reports {
            if let Ok(mut reports) = reports.lock() {
                reports[place] = Some(report);
            }
        }
    }
    hand_over_all(pending, &mut ahead, on_record)
}
