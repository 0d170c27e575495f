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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::encode::{Encoded, Outcome};
use crate::error::{Error, Problem, Result};
use crate::pack::{best_fit_decreasing, SplitMix64};
use crate::pipeline::StreamProgress;
use crate::pipeline::{build_encoder, forced_format, stream, JobConfig};
use crate::read::{self, RawRecord};
use crate::schema::Format;
use crate::shard::{shard_name, Row, ShardInfo, ShardWriter};
use crate::tokenize::hex_sha256;

pub const FORMAT_NAME: &str = "sftpack-pack";
pub const FORMAT_VERSION: u32 = 1;
const REJECT_RECORD_LIMIT: usize = 64 * 1024;

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
}

fn yes() -> bool {
    true
}
fn default_window() -> usize {
    100_000
}
fn default_progress_ms() -> u64 {
    500
}
fn default_shard_bytes() -> usize {
    512 << 20
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub records_read: u64,
    pub packed: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub rejected_by_kind: BTreeMap<String, u64>,
    pub dropped_by_reason: BTreeMap<String, u64>,
    pub truncated: u64,
    pub tokens: u64,
    pub trained_tokens: u64,
    pub rows: u64,
    pub packing_efficiency: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// How far a run got: written after every completed window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    key: String,
    records_consumed: u64,
    windows: u64,
    rejects_bytes: u64,
    counts: Counts,
    shards: Vec<ShardInfo>,
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
    pub manifest: Value,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(|e| Error::io(&temporary, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&temporary, e))?;
    file.sync_all().map_err(|e| Error::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
}

fn hash_file(path: &Path) -> Result<InputInfo> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let digest = hasher.finalize();
    Ok(InputInfo {
        path: path.display().to_string(),
        bytes,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// The settings that shape the output (threads and paths do not).
fn output_settings(config: &PreprocessConfig) -> Value {
    json!({
        "format": config.job.format,
        "encode": config.job.encode,
        "pack": config.pack,
        "seed": config.seed,
        "window": config.window,
        "shard_bytes": config.shard_bytes,
    })
}

struct Run<'a> {
    config: &'a PreprocessConfig,
    max_length: Option<usize>,
    writer: ShardWriter,
    rejects: File,
    rejects_bytes: u64,
    counts: Counts,
    window: Vec<(Encoded, u32, u64, Option<u64>)>,
    windows: u64,
    records_consumed: u64,
    key: String,
    files: Vec<PathBuf>,
}

impl Run<'_> {
    fn reject(&mut self, raw: &RawRecord, status: &str, problems: &[Problem]) -> Result<()> {
        let kind = problems.first().map_or("unknown", |p| p.kind).to_string();
        let text = match &raw.text {
            Ok(t) => t.as_str(),
            Err(_) => "",
        };
        let mut cut = text.len().min(REJECT_RECORD_LIMIT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut line = json!({
            "file": self.files[raw.file as usize].display().to_string(),
            "file_index": raw.file,
            "line": raw.line,
            "status": status,
            "kind": kind,
            "problems": problems,
            "record": &text[..cut],
        });
        if let Some(index) = raw.index {
            line["index"] = json!(index);
        }
        if cut < text.len() {
            line["record_truncated"] = json!(true);
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.rejects
            .write_all(&bytes)
            .map_err(|e| Error::io("rejects.jsonl", e))?;
        self.rejects_bytes += bytes.len() as u64;
        let by = if status == "rejected" {
            &mut self.counts.rejected_by_kind
        } else {
            &mut self.counts.dropped_by_reason
        };
        *by.entry(kind).or_default() += 1;
        Ok(())
    }

    fn take(&mut self, raw: &RawRecord, outcome: Outcome) -> Result<()> {
        self.counts.records_read += 1;
        match outcome {
            Outcome::Encoded(encoded) => {
                self.counts.packed += 1;
                self.counts.truncated += u64::from(encoded.truncated);
                self.counts.tokens += encoded.ids.len() as u64;
                self.counts.trained_tokens += encoded.trained_tokens() as u64;
                let line = raw.index.unwrap_or(raw.line);
                self.window.push((encoded, raw.file, line, raw.index));
            }
            Outcome::Rejected(problems) => {
                self.counts.rejected += 1;
                self.reject(raw, "rejected", &problems)?;
            }
            Outcome::Dropped(problem) => {
                self.counts.dropped += 1;
                self.reject(raw, "dropped", std::slice::from_ref(&problem))?;
            }
        }
        self.records_consumed += 1;
        if self.window.len() >= self.config.window {
            self.flush_window()?;
        }
        Ok(())
    }

    fn row_of(&self, docs: &[usize]) -> Row {
        let mut row = Row {
            cu_seqlens: vec![0],
            ..Row::default()
        };
        for &d in docs {
            let (encoded, file, line, _) = &self.window[d];
            row.input_ids.extend(encoded.ids.iter().map(|&id| id as i32));
            row.loss_mask.extend_from_slice(&encoded.mask);
            row.cu_seqlens.push(row.input_ids.len() as i32);
            row.source_file.push(*file as i32);
            row.source_line.push(*line as i64);
        }
        row
    }

    /// Packs and writes the window, closes its shard, and checkpoints.
    fn flush_window(&mut self) -> Result<()> {
        if self.window.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<Vec<usize>> = match (self.config.pack, self.max_length) {
            (true, Some(max)) => {
                let lengths: Vec<usize> = self.window.iter().map(|(e, ..)| e.ids.len()).collect();
                best_fit_decreasing(&lengths, max)
            }
            _ => (0..self.window.len()).map(|d| vec![d]).collect(),
        };
        if self.config.pack {
            SplitMix64::new(self.config.seed ^ self.windows.wrapping_mul(0x9E37_79B9)).shuffle(&mut rows);
        }
        for docs in &rows {
            let row = self.row_of(docs);
            row.validate(self.max_length)?;
            self.writer.write(row)?;
        }
        self.counts.rows += rows.len() as u64;
        self.writer.close_shard()?;
        self.window.clear();
        self.windows += 1;
        self.checkpoint()
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.rejects.sync_data().map_err(|e| Error::io("rejects.jsonl", e))?;
        let checkpoint = Checkpoint {
            key: self.key.clone(),
            records_consumed: self.records_consumed,
            windows: self.windows,
            rejects_bytes: self.rejects_bytes,
            counts: self.counts.clone(),
            shards: self.writer.finished.clone(),
        };
        let text = serde_json::to_vec_pretty(&checkpoint).unwrap_or_default();
        write_atomic(&self.config.out.join("progress.json"), &text)
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Removes shard files a checkpoint does not list (left by a run killed mid-window).
fn remove_unlisted_shards(out: &Path, keep: usize) -> Result<()> {
    let listed: Vec<String> = (0..keep).map(shard_name).collect();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard = name.starts_with("shard-") && (name.ends_with(".arrow") || name.ends_with(".tmp"));
        if is_shard && !listed.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

fn clear_output(out: &Path) -> Result<()> {
    remove_unlisted_shards(out, 0)?;
    for name in ["manifest.json", "progress.json", "rejects.jsonl"] {
        let path = out.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Runs the pipeline. `progress` is called about twice a second; returning false stops the run
/// at once (it can be resumed).
pub fn preprocess(config: &PreprocessConfig, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<PreprocessReport> {
    let out = &config.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let files = read::expand_inputs(&config.job.inputs)?;
    let encoder = build_encoder(&config.job)?;
    let forced = forced_format(&config.job)?;
    let inputs: Vec<InputInfo> = files.par_iter().map(|p| hash_file(p)).collect::<Result<_>>()?;
    let tokenizer = json!({
        "path": encoder.tokenizer.path.display().to_string(),
        "sha256": encoder.tokenizer.sha256,
        "vocab_size": encoder.tokenizer.vocab_size(),
        "special_tokens": encoder.tokenizer.special,
    });
    let template = json!({"name": encoder.template.name(), "source": encoder.template.source(), "sha256": encoder.template.sha256()});
    let settings = output_settings(config);
    let key_material = json!({
        "engine": env!("CARGO_PKG_VERSION"),
        "inputs": inputs.iter().map(|i| &i.sha256).collect::<Vec<_>>(),
        "tokenizer": encoder.tokenizer.sha256,
        "template": encoder.template.sha256(),
        "settings": settings,
    });
    let key = hex_sha256(key_material.to_string().as_bytes());

    let manifest_path = out.join("manifest.json");
    if let Some(existing) = read_json::<Value>(&manifest_path) {
        if existing.get("key").and_then(Value::as_str) == Some(key.as_str()) {
            return Ok(PreprocessReport {
                status: "up to date".into(),
                out: out.display().to_string(),
                manifest: existing,
            });
        }
        if !config.overwrite {
            return Err(Error::Config(format!(
                "{} already holds a pack made from other inputs or settings\nhint: choose another --out, or pass --overwrite to replace it",
                out.display()
            )));
        }
        clear_output(out)?;
    }
    let checkpoint = read_json::<Checkpoint>(&out.join("progress.json")).filter(|c| c.key == key);
    let resumed = checkpoint.is_some();
    if checkpoint.is_none() {
        clear_output(out)?;
    }
    let checkpoint = checkpoint.unwrap_or(Checkpoint {
        key: key.clone(),
        records_consumed: 0,
        windows: 0,
        rejects_bytes: 0,
        counts: Counts::default(),
        shards: Vec::new(),
    });
    remove_unlisted_shards(out, checkpoint.shards.len())?;
    let rejects_path = out.join("rejects.jsonl");
    let rejects = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&rejects_path)
        .map_err(|e| Error::io(&rejects_path, e))?;
    rejects
        .set_len(checkpoint.rejects_bytes)
        .map_err(|e| Error::io(&rejects_path, e))?;
    let mut rejects = rejects;
    std::io::Seek::seek(&mut rejects, std::io::SeekFrom::End(0)).map_err(|e| Error::io(&rejects_path, e))?;

    let mut writer = ShardWriter::new(out, config.shard_bytes, checkpoint.shards.len());
    writer.finished = checkpoint.shards.clone();
    let mut run = Run {
        config,
        max_length: config.job.encode.max_length,
        writer,
        rejects,
        rejects_bytes: checkpoint.rejects_bytes,
        counts: checkpoint.counts.clone(),
        window: Vec::new(),
        windows: checkpoint.windows,
        records_consumed: checkpoint.records_consumed,
        key: key.clone(),
        files: files.clone(),
    };
    let bytes_total: u64 = inputs.iter().map(|i| i.bytes).sum();
    // What progress reports of the run; shared by the two callbacks.
    let written = std::cell::Cell::new((run.counts.tokens, run.counts.rows));
    let mut on_record = |_: Option<Format>, raw: RawRecord, outcome: Outcome| {
        run.take(&raw, outcome)?;
        written.set((run.counts.tokens, run.counts.rows));
        Ok(())
    };
    let interval = std::time::Duration::from_millis(config.progress_interval_ms);
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
    let skip = checkpoint.records_consumed;
    stream(
        &files,
        forced,
        &encoder,
        config.job.threads,
        skip,
        &mut on_record,
        &mut on_batch,
    )?;
    run.flush_window()?;

    let mut counts = run.counts.clone();
    counts.packing_efficiency = match run.max_length {
        Some(max) if counts.rows > 0 => counts.tokens as f64 / (counts.rows as f64 * max as f64),
        _ => 1.0,
    };
    let manifest = json!({
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sftpack_version": env!("CARGO_PKG_VERSION"),
        "key": key,
        "inputs": inputs,
        "tokenizer": tokenizer,
        "template": template,
        "config": settings,
        "max_length": run.max_length,
        "counts": counts,
        "shards": run.writer.finished,
    });
    write_atomic(
        &manifest_path,
        &serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
    )?;
    let progress_path = out.join("progress.json");
    std::fs::remove_file(&progress_path).map_err(|e| Error::io(&progress_path, e))?;
    let status = if resumed { "resumed" } else { "done" };
    Ok(PreprocessReport {
        status: status.into(),
        out: out.display().to_string(),
        manifest,
    })
}
