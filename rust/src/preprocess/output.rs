//! One output pack of a run (the training pack, or its validation split): encoded documents
//! collect in a window; a full window is packed, written and its shard closed. Every record not
//! packed goes to `rejects.jsonl` with its reason. The state a checkpoint keeps is
//! [`SinkState`]: what was written, and how long the rejects file was then.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::encode::{Encoded, Outcome};
use crate::error::{Error, Problem, Result};
use crate::pack::{best_fit_decreasing, SplitMix64};
use crate::read::RawRecord;
use crate::shard::{shard_name, Row, ShardInfo, ShardWriter};
use crate::tally::Tally;

const REJECT_RECORD_LIMIT: usize = 64 * 1024;
pub(super) const REJECTS_FILE: &str = "rejects.jsonl";

/// A pack's counts: the tally of its records, and the rows they were packed into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(flatten)]
    pub tally: Tally,
    pub rows: u64,
    pub packing_efficiency: f64,
}

/// What a checkpoint records of one output pack.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct SinkState {
    pub rejects_bytes: u64,
    pub counts: Counts,
    pub shards: Vec<ShardInfo>,
}

/// How rows are formed from a window of documents.
#[derive(Debug, Clone, Copy)]
pub(super) struct Packing {
    pub pack: bool,
    pub max_length: Option<usize>,
    pub seed: u64,
}

struct Document {
    encoded: Encoded,
    /// The input file, or in a partitioned run the work unit, the document was read from.
    source: u32,
    line: u64,
}

/// A raw-text document cut into its chunks (each packed as a document, its first token
/// untrained already); any other document as it is.
fn chunks(encoded: Encoded) -> Vec<Encoded> {
    match encoded.chunk_length {
        Some(length) if encoded.ids.len() > length => encoded
            .ids
            .chunks(length)
            .zip(encoded.mask.chunks(length))
            .map(|(ids, mask)| Encoded {
                ids: ids.to_vec(),
                mask: mask.to_vec(),
                truncated_from: None,
                chunk_length: None,
            })
            .collect(),
        _ => vec![encoded],
    }
}

pub(super) struct Sink {
    writer: ShardWriter,
    rejects: File,
    rejects_bytes: u64,
    pub counts: Counts,
    window: Vec<Document>,
}

impl Sink {
    /// Opens `dir` to continue from `state`: shards the state does not list and rejects written
    /// after it are removed.
    pub(super) fn open(dir: &Path, shard_bytes: usize, state: SinkState) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        remove_unlisted_shards(dir, state.shards.len())?;
        let rejects_path = dir.join(REJECTS_FILE);
        let mut rejects = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&rejects_path)
            .map_err(|e| Error::io(&rejects_path, e))?;
        rejects
            .set_len(state.rejects_bytes)
            .map_err(|e| Error::io(&rejects_path, e))?;
        rejects
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(&rejects_path, e))?;
        let mut writer = ShardWriter::new(dir, shard_bytes, state.shards.len());
        writer.finished = state.shards;
        Ok(Sink {
            writer,
            rejects,
            rejects_bytes: state.rejects_bytes,
            counts: state.counts,
            window: Vec::new(),
        })
    }

    pub(super) fn window_len(&self) -> usize {
        self.window.len()
    }

    /// Counts one record and keeps it for packing, or writes it to the rejects with its reason.
    pub(super) fn take(&mut self, raw: &RawRecord, outcome: Outcome, file_name: &Path) -> Result<()> {
        self.counts.tally.count(&outcome);
        match outcome {
            Outcome::Encoded(encoded) => {
                let (source, line) = (raw.unit.unwrap_or(raw.file), raw.index.unwrap_or(raw.line));
                for encoded in chunks(encoded) {
                    self.window.push(Document { encoded, source, line });
                }
                Ok(())
            }
            Outcome::Rejected(problems) => self.reject(raw, file_name, "rejected", &problems),
            Outcome::Dropped { problem, .. } => self.reject(raw, file_name, "dropped", std::slice::from_ref(&problem)),
        }
    }

    fn reject(&mut self, raw: &RawRecord, file_name: &Path, status: &str, problems: &[Problem]) -> Result<()> {
        let kind = problems.first().map_or("unknown", |p| p.kind);
        let text = raw.json_text().ok();
        let current = text.as_deref().unwrap_or("");
        let (record, truncated) = cut(raw.mapped_from.as_deref().unwrap_or(current));
        let mut line = json!({
            "file": file_name.display().to_string(),
            "file_index": raw.file,
            "line": raw.line,
            "status": status,
            "kind": kind,
            "problems": problems,
            "record": record,
        });
        if let Some(index) = raw.index {
            line["index"] = json!(index);
        }
        if let Some(unit) = raw.unit {
            // `line` counts from the unit's first line; merging the parts numbers it in the file
            line["unit"] = json!(unit);
        }
        if raw.mapped_from.is_some() && raw.text.is_ok() {
            line["mapped"] = json!(cut(current).0);
        }
        if truncated {
            line["record_truncated"] = json!(true);
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        self.rejects.write_all(&bytes).map_err(|e| Error::io(REJECTS_FILE, e))?;
        self.rejects_bytes += bytes.len() as u64;
        Ok(())
    }

    fn row_of(&self, docs: &[usize]) -> Row {
        let mut row = Row {
            cu_seqlens: vec![0],
            ..Row::default()
        };
        for &d in docs {
            let doc = &self.window[d];
            row.input_ids.extend(doc.encoded.ids.iter().map(|&id| id as i32));
            row.loss_mask.extend_from_slice(&doc.encoded.mask);
            row.cu_seqlens.push(row.input_ids.len() as i32);
            row.source_file.push(doc.source as i32);
            row.source_line.push(doc.line as i64);
        }
        row
    }

    /// Packs and writes the window (the `window_number`-th of the run) and closes its shard.
    pub(super) fn flush(&mut self, packing: Packing, window_number: u64) -> Result<()> {
        if self.window.is_empty() {
            return Ok(());
        }
        let mut rows: Vec<Vec<usize>> = match (packing.pack, packing.max_length) {
            (true, Some(max)) => {
                let lengths: Vec<usize> = self.window.iter().map(|d| d.encoded.ids.len()).collect();
                best_fit_decreasing(&lengths, max)
            }
            _ => (0..self.window.len()).map(|d| vec![d]).collect(),
        };
        if packing.pack {
            SplitMix64::new(packing.seed ^ window_number.wrapping_mul(0x9E37_79B9)).shuffle(&mut rows);
        }
        for docs in &rows {
            let row = self.row_of(docs);
            row.validate(packing.max_length)?;
            self.writer.write(row)?;
        }
        self.counts.rows += rows.len() as u64;
        self.writer.close_shard()?;
        self.window.clear();
        Ok(())
    }

    /// Makes the rejects durable and returns what a checkpoint keeps.
    pub(super) fn state(&mut self) -> Result<SinkState> {
        self.rejects.sync_data().map_err(|e| Error::io(REJECTS_FILE, e))?;
        Ok(SinkState {
            rejects_bytes: self.rejects_bytes,
            counts: self.counts.clone(),
            shards: self.writer.finished.clone(),
        })
    }

    /// The final counts (with packing efficiency) and shards.
    pub(super) fn finish(&self, max_length: Option<usize>) -> (Counts, Vec<ShardInfo>) {
        let mut counts = self.counts.clone();
        counts.packing_efficiency = match max_length {
            Some(max) if counts.rows > 0 => counts.tally.tokens as f64 / (counts.rows as f64 * max as f64),
            _ => 1.0,
        };
        (counts, self.writer.finished.clone())
    }
}

/// The first REJECT_RECORD_LIMIT bytes of a record (at a character boundary), and whether that
/// cut anything.
fn cut(text: &str) -> (&str, bool) {
    let mut end = text.len().min(REJECT_RECORD_LIMIT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], end < text.len())
}

/// Removes shard files a checkpoint does not list (left by a run killed mid-window).
fn remove_unlisted_shards(dir: &Path, keep: usize) -> Result<()> {
    let listed: Vec<String> = (0..keep).map(shard_name).collect();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard = name.starts_with("shard-") && (name.ends_with(".arrow") || name.ends_with(".tmp"));
        if is_shard && !listed.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Removes everything a run writes into `dir`, the validation split's folder included.
pub(super) fn clear_output(dir: &Path, validation: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    remove_unlisted_shards(dir, 0)?;
    for name in ["manifest.json", "progress.json", REJECTS_FILE] {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    if validation.is_dir() {
        std::fs::remove_dir_all(validation).map_err(|e| Error::io(validation, e))?;
    }
    Ok(())
}

/// Writes a file whole or not at all (temporary file, fsync, rename).
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary: PathBuf = path.with_extension("json.tmp");
    let mut file = File::create(&temporary).map_err(|e| Error::io(&temporary, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&temporary, e))?;
    file.sync_all().map_err(|e| Error::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
}
