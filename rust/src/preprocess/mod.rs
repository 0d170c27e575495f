//! Preprocess: the whole pipeline, read → encode (parallel) → pack → write, with a manifest, a
//! rejects file and resume.
//!
//! Records are read in order on one thread and encoded in batches on a thread pool; results come
//! back in input order, so the output never depends on the thread count. Encoded documents
//! collect in a window (`window` documents); a full window is packed, written, and its shard
//! closed, after which `progress.json` records how far the run got. A run killed at any moment
//! and started again with the same arguments skips the records of completed windows and ends
//! with the same bytes as an uninterrupted run. Peak memory is about one window of documents
//! plus one batch per thread, whatever the input size.
//!
//! With a validation split ([`split`]) the held-out records go to a second pack in
//! `out/validation/`, packed the same way; both windows are flushed together, so one
//! checkpoint covers both.
//!
//! ```text
//! out/manifest.json, shard-*.arrow, rejects.jsonl             the training pack
//! out/validation/manifest.json, shard-*.arrow, rejects.jsonl  the held-out records, if any
//! ```

mod manifest;
pub mod merge;
mod output;
pub mod split;

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::encode::{overlong_stop, Outcome};
use crate::error::{Error, Result};
use crate::map::RecordMapper;
use crate::pipeline::StreamProgress;
use crate::pipeline::{forced_format, open_encoder, reads_raw_text, stream, JobConfig, Partition, Positioned, Source};
use crate::profile::{self, Profile, Stage};
use crate::read::units::{self, UnitInfo};
use crate::read::{self, RawRecord, UnitReport, WorkUnit};
use crate::schema::Format;
use crate::tokenize::EngineReport;

use manifest::{describe_input, same_bytes, Provenance};
pub use manifest::{
    InputInfo, Manifest, OutputSettings, TemplateInfo, TokenizerInfo, ValidationInfo, FORMAT_NAME, FORMAT_VERSION,
    VALIDATION_DIR,
};
pub use output::Counts;
use output::{clear_output, write_atomic, Packing, Sink, SinkState};
use split::{Selection, ValidationSize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    pub job: JobConfig,
    pub out: PathBuf,
    /// Pack documents into rows (false: one conversation per row, in input order).
    #[serde(default = "yes")]
    pub pack: bool,
    #[serde(default)]
    pub seed: u64,
    /// Documents per packing window.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Shards roll over at about this many bytes.
    #[serde(default = "default_shard_bytes")]
    pub shard_bytes: usize,
    /// Replace an output directory made with other inputs or settings.
    #[serde(default)]
    pub overwrite: bool,
    /// How often progress is reported.
    #[serde(default = "default_progress_ms")]
    pub progress_interval_ms: u64,
    /// Hold out this much of the records as a validation pack in `out/validation/`.
    #[serde(default)]
    pub validation: Option<ValidationSize>,
    /// Prepare only this part of the records (`sftpack pack merge` joins the parts).
    #[serde(default)]
    pub partition: Option<Partition>,
}

fn yes() -> bool {
    true
}

/// Every default and choice the engine applies to a job's settings, for the front-ends to
/// mirror (Python's `sftpack.settings` reads them once): one definition of each.
pub fn settings_defaults() -> serde_json::Value {
    serde_json::json!({
        "max_length": crate::encode::DEFAULT_MAX_LENGTH,
        "overlong": crate::encode::Overlong::ALL,
        "formats": crate::schema::Format::ALL,
        "template": crate::template::TOKENIZER_TEMPLATE,
        "examples_per_kind": crate::pipeline::default_examples(),
        "pack": yes(),
        "seed": u64::default(),
        "window": default_window(),
        "shard_bytes": default_shard_bytes(),
        "progress_interval_ms": default_progress_ms(),
    })
}
/// 25k documents: packing efficiency within 0.01% of a 100k window on real chat data, and a
/// quarter of the memory (peak RSS ~250 MB instead of ~440 MB on 100 MB of Qwen3 chat).
fn default_window() -> usize {
    25_000
}
fn default_progress_ms() -> u64 {
    500
}
fn default_shard_bytes() -> usize {
    512 << 20
}

/// How far a run got: written after every completed window. `splits` holds the training pack's
/// state, then the validation pack's when the run holds one out.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    key: String,
    records_consumed: u64,
    windows: u64,
    splits: Vec<SinkState>,
}

/// Progress as reported to the caller (every `progress_interval_ms`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub records: u64,
    pub tokens: u64,
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PreprocessReport {
    /// "done", "resumed" or "up to date".
    pub status: String,
    pub out: String,
    pub manifest: Manifest,
    /// Where the time went (not part of the pack: it varies from run to run).
    pub timing: Timing,
}

/// Wall seconds of the start-up (tokenizer and template loading, input hashing, the key) and
/// of the whole run, CPU seconds per stage, and the seconds the tokenizer's 1.0 engine took to
/// build on its own thread (beside the start-up and the first batches, not part of either).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timing {
    pub setup_s: f64,
    pub wall_s: f64,
    pub engine_build_s: f64,
    pub stages: Profile,
    /// Bytes read from the inputs (hashing, framing, counting), before decompression.
    pub input_bytes_read: u64,
}

struct Run<'a> {
    config: &'a PreprocessConfig,
    packing: Packing,
    train: Sink,
    validation: Option<(Sink, Selection)>,
    windows: u64,
    records_consumed: u64,
    key: String,
    files: Vec<PathBuf>,
    /// A partitioned run's work list, as its manifest records it.
    units: Option<Vec<UnitInfo>>,
}

impl Run<'_> {
    /// Sends a record to the validation pack if the split holds out its position, else to the
    /// training pack; packs both windows when either is full.
    fn take(&mut self, position: u64, raw: &RawRecord, outcome: Outcome) -> Result<()> {
        let file_name = &self.files[raw.file as usize];
        if let Some(problem) = overlong_stop(&self.config.job.encode, &outcome) {
            return Err(Error::Overlong {
                location: self.location(raw),
                detail: problem.message.clone(),
            });
        }
        let sink = match &mut self.validation {
            Some((sink, selection)) if selection.contains(raw) => sink,
            _ => &mut self.train,
        };
        sink.take(raw, outcome, file_name)?;
        self.records_consumed = position + 1;
        if self.sinks().any(|s| s.window_len() >= self.config.window) {
            self.flush_windows()?;
        }
        Ok(())
    }

    /// Where a record lies, for an error: file:line, or its byte offset when it was read in a
    /// unit whose first line is not known yet (the merge numbers those).
    fn location(&self, raw: &RawRecord) -> String {
        let file_name = self.files[raw.file as usize].display();
        let element = raw.index.map_or(String::new(), |i| format!(" (element {i})"));
        let first_line = match (raw.unit, &self.units) {
            (Some(unit), Some(units)) => units[unit as usize].first_line,
            _ => Some(1),
        };
        match first_line {
            Some(first) => format!("{file_name}:{}{element}", first - 1 + raw.line),
            None => format!("{file_name}, the record at byte {}", raw.offset),
        }
    }

    fn sinks(&self) -> impl Iterator<Item = &Sink> {
        std::iter::once(&self.train).chain(self.validation.as_ref().map(|(s, _)| s))
    }

    fn counts(&self) -> (u64, u64) {
        self.sinks().fold((0, 0), |(tokens, rows), s| {
            (tokens + s.counts.tally.tokens, rows + s.counts.rows)
        })
    }

    /// Packs and writes every pending window, then checkpoints: a resumed run starts after the
    /// last record both packs hold.
    fn flush_windows(&mut self) -> Result<()> {
        self.train.flush(self.packing, self.windows)?;
        if let Some((sink, _)) = &mut self.validation {
            sink.flush(self.packing, self.windows)?;
        }
        self.windows += 1;
        let mut splits = vec![self.train.state()?];
        if let Some((sink, _)) = &mut self.validation {
            splits.push(sink.state()?);
        }
        let checkpoint = Checkpoint {
            key: self.key.clone(),
            records_consumed: self.records_consumed,
            windows: self.windows,
            splits,
        };
        let text = serde_json::to_vec_pretty(&checkpoint).unwrap_or_default();
        write_atomic(&self.config.out.join("progress.json"), &text)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs the pipeline. `progress` is called about twice a second; returning false stops the run
/// at once (it can be resumed).
pub fn preprocess(
    config: &PreprocessConfig,
    mapper: Option<&dyn RecordMapper>,
    progress: &mut dyn FnMut(&Progress) -> bool,
) -> Result<PreprocessReport> {
    let started = std::time::Instant::now();
    profile::reset();
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let files = read::expand_inputs(&config.job.inputs, reads_raw_text(&config.job))?;
    // Hashing the inputs (for the pack key) overlaps opening the tokenizer; its 1.0 engine
    // builds on while the stream renders the first batches.
    let (encoder, inputs) = rayon::join(
        || open_encoder(&config.job),
        || {
            files
                .par_iter()
                .map(|p| describe_input(p))
                .collect::<Result<Vec<InputInfo>>>()
        },
    );
    let (encoder, inputs) = (encoder?, inputs?);
    let forced = forced_format(&config.job)?;
    let bytes_total: u64 = inputs.iter().map(|i| i.bytes).sum();
    let mut provenance = Provenance::new(config, &encoder, inputs);
    let setup_s = started.elapsed().as_secs_f64();
    let report = |status: &str, manifest| PreprocessReport {
        status: status.into(),
        out: out.display().to_string(),
        manifest,
        timing: Timing {
            setup_s,
            wall_s: started.elapsed().as_secs_f64(),
            engine_build_s: encoder.tokenizer.engine_build_seconds(),
            stages: profile::snapshot(),
            input_bytes_read: profile::input_bytes(),
        },
    };
    if let Some(manifest) = finished_pack(config, &provenance)? {
        return Ok(report("up to date", manifest));
    }
    let partition = config.partition.map(Partition::check).transpose()?;
    let (units, all_units) = match partition {
        Some(part) => {
            let sizes: Vec<u64> = provenance.inputs.iter().map(|i| i.bytes).collect();
            let all = units::work_list(&files, &sizes)?;
            let mine = units::part_of(&all, part.count, part.index);
            let mine: Vec<(Option<u32>, WorkUnit)> = mine.into_iter().map(|(id, u)| (Some(id), u)).collect();
            (mine, Some(all.iter().map(UnitInfo::of).collect::<Vec<_>>()))
        }
        None => (Source::whole_files(&files), None),
    };
    let bytes_total = match partition {
        Some(_) => units.iter().map(|(_, u)| u.bytes).sum(),
        None => bytes_total,
    };
    let (mut run, resumed) = Run::open(config, &provenance.key, &files, all_units)?;
    let reports = std::sync::Mutex::new(vec![None; units.len()]);
    let source = Source {
        units: &units,
        forced,
        encoder: &encoder,
        mapper,
        threads: config.job.threads,
        reports: Some(&reports),
    };
    let streamed = run.stream(&source, bytes_total, progress);
    if let Err(error @ (Error::Overlong { .. } | Error::Tokenizer(_))) = streamed {
        // These settings can never finish (a tokenizer that neither engine loads is found once
        // its engine has built, after the first batches): leave no half-made pack to resume.
        clear_output(out, &out.join(VALIDATION_DIR))?;
        return Err(error);
    }
    streamed?;
    profile::time(Stage::Write, || run.flush_windows())?;
    if let (Some((sink, _)), None) = (&run.validation, partition) {
        split::check_outcome(sink.counts.tally.records_read, run.train.counts.tally.records_read)?;
    }
    let reports = reports.into_inner().unwrap_or_default();
    match &mut run.units {
        // A part reads some files in ranges only: no part records digests, so all parts agree.
        Some(infos) => {
            for ((id, _), report) in units.iter().zip(&reports) {
                if let (Some(id), Some(report)) = (id, report) {
                    infos[*id as usize].lines = Some(report.lines());
                }
            }
            provenance.units = Some(infos.clone());
        }
        None => provenance.set_digests(
            reports
                .iter()
                .map(|r| r.as_ref().and_then(UnitReport::sha256))
                .collect(),
        ),
    }
    let manifest = write_manifests(&run, &provenance, encoder.tokenizer.engine_report(), out)?;
    let progress_path = out.join("progress.json");
    std::fs::remove_file(&progress_path).map_err(|e| Error::io(&progress_path, e))?;
    Ok(report(if resumed { "resumed" } else { "done" }, manifest))
}

/// The finished pack in the output directory if it has this run's key, or if only its inputs'
/// times changed (same settings, same bytes: then its manifests record the new times). A pack
/// made otherwise is an error, or, with `overwrite`, removed.
fn finished_pack(config: &PreprocessConfig, provenance: &Provenance) -> Result<Option<Manifest>> {
    let out = &config.out;
    let Some(existing) = read_json::<Value>(&out.join("manifest.json")) else {
        return Ok(None);
    };
    if let Ok(mut manifest) = serde_json::from_value::<Manifest>(existing) {
        if manifest.key == provenance.key {
            return Ok(Some(manifest));
        }
        let same_settings = provenance.key_with(&manifest.inputs) == manifest.key;
        if same_settings && same_bytes(&manifest.inputs, &provenance.inputs)? {
            for path in [
                out.join("manifest.json"),
                out.join(VALIDATION_DIR).join("manifest.json"),
            ] {
                retime(&path, provenance)?;
            }
            manifest.key.clone_from(&provenance.key);
            manifest.inputs = retimed(&manifest.inputs, &provenance.inputs);
            return Ok(Some(manifest));
        }
    }
    if !config.overwrite {
        return Err(Error::config(format!(
            "{} already holds a pack made from other inputs or settings",
            out.display()
        ))
        .hint("choose another `out`, or use `overwrite: true` to replace it"));
    }
    clear_output(out, &out.join(VALIDATION_DIR))?;
    Ok(None)
}

/// The recorded inputs with the current times (and the recorded hashes).
fn retimed(recorded: &[InputInfo], current: &[InputInfo]) -> Vec<InputInfo> {
    recorded
        .iter()
        .zip(current)
        .map(|(old, new)| InputInfo {
            sha256: old.sha256.clone(),
            ..new.clone()
        })
        .collect()
}

/// Rewrites a manifest of this pack (if there) with the current input times and key.
fn retime(path: &Path, provenance: &Provenance) -> Result<()> {
    let Some(mut manifest) = read_json::<Manifest>(path) else {
        return Ok(());
    };
    manifest.inputs = retimed(&manifest.inputs, &provenance.inputs);
    manifest.key.clone_from(&provenance.key);
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    write_atomic(path, &text)
}

impl<'a> Run<'a> {
    /// Opens the output packs: where an earlier run with this key checkpointed, resumed (true),
    /// else from nothing.
    fn open(
        config: &'a PreprocessConfig,
        key: &str,
        files: &[PathBuf],
        units: Option<Vec<UnitInfo>>,
    ) -> Result<(Self, bool)> {
        let out = &config.out;
        let validation_dir = out.join(VALIDATION_DIR);
        let splits = if config.validation.is_some() { 2 } else { 1 };
        let checkpoint =
            read_json::<Checkpoint>(&out.join("progress.json")).filter(|c| c.key == key && c.splits.len() == splits);
        let resumed = checkpoint.is_some();
        if !resumed {
            clear_output(out, &validation_dir)?;
        }
        let Checkpoint {
            records_consumed,
            windows,
            splits: mut states,
            ..
        } = checkpoint.unwrap_or(Checkpoint {
            key: key.to_string(),
            records_consumed: 0,
            windows: 0,
            splits: vec![SinkState::default(); splits],
        });
        let validation = match config.validation {
            Some(size) => {
                let state = states.pop().unwrap_or_default();
                let selection = Selection::choose(files, size, config.seed)?;
                Some((Sink::open(&validation_dir, config.shard_bytes, state)?, selection))
            }
            None => None,
        };
        let train = Sink::open(out, config.shard_bytes, states.pop().unwrap_or_default())?;
        let run = Run {
            config,
            packing: Packing {
                pack: config.pack,
                max_length: config.job.encode.max_length,
                seed: config.seed,
            },
            train,
            validation,
            windows,
            records_consumed,
            key: key.to_string(),
            files: files.to_vec(),
            units,
        };
        Ok((run, resumed))
    }

    /// Streams the records not done yet into the packs, reporting progress.
    fn stream(
        &mut self,
        source: &Source<'_>,
        bytes_total: u64,
        progress: &mut dyn FnMut(&Progress) -> bool,
    ) -> Result<()> {
        let skip = self.records_consumed;
        let interval = std::time::Duration::from_millis(self.config.progress_interval_ms);
        // What progress reports of the run; shared by the two callbacks.
        let written = std::cell::Cell::new(self.counts());
        let mut on_record = |_: Option<Format>, record: Positioned, outcome: Outcome| {
            self.take(record.position, &record.raw, outcome)?;
            written.set(self.counts());
            Ok(())
        };
        let mut last_report = std::time::Instant::now();
        let mut on_batch = |p: &StreamProgress| {
            if last_report.elapsed() < interval {
                return true;
            }
            last_report = std::time::Instant::now();
            let (tokens, rows) = written.get();
            progress(&Progress {
                records: p.records,
                tokens,
                bytes_read: p.bytes_read,
                bytes_total,
                rows,
            })
        };
        stream(source, skip, &mut on_record, &mut on_batch)
    }
}

/// Writes the validation pack's manifest (if any), then the training pack's, which marks the
/// whole run complete; returns the latter.
fn write_manifests(run: &Run<'_>, provenance: &Provenance, engine: EngineReport, out: &Path) -> Result<Manifest> {
    let max_length = run.config.job.encode.max_length;
    let split_name = |name: &'static str| run.validation.as_ref().map(|_| name);
    let (counts, shards) = run.train.finish(max_length);
    let mut manifest = provenance.manifest(max_length, counts, shards, split_name("train"));
    manifest.tokenizer_engine = Some(engine.clone());
    if let (Some((sink, _)), Some(size)) = (&run.validation, run.config.validation) {
        let (counts, shards) = sink.finish(max_length);
        let info = ValidationInfo {
            path: VALIDATION_DIR.into(),
            size,
            records: counts.tally.records_read,
            documents: counts.tally.packed,
            tokens: counts.tally.tokens,
            rows: counts.rows,
        };
        let mut held_out = provenance.manifest(max_length, counts, shards, Some("validation"));
        held_out.tokenizer_engine = Some(engine);
        write_atomic(&out.join(VALIDATION_DIR).join("manifest.json"), &pretty(&held_out))?;
        manifest.validation = Some(info);
    }
    write_atomic(&out.join("manifest.json"), &pretty(&manifest))?;
    Ok(manifest)
}

fn pretty(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(manifest).unwrap_or_default()
}
