//! Work units: a job's inputs cut into pieces that can be read apart, so that the parts of a
//! partitioned run together read the corpus about once.
//!
//! ```text
//! a.jsonl                  |-- unit 0 --|-- unit 1 --|-- unit 2 --|   byte ranges: a record
//!                                                                     belongs to the unit its
//!                                                                     line starts in
//! b.parquet                | group 0 | group 1 | group 2 |            one unit per row group
//! c.json, d.jsonl.gz, e.arrow                                         one unit each, read whole
//! ```
//!
//! The list depends on the inputs alone (their sizes and Parquet footers), never on the number
//! of parts, and part I of N takes a run of units holding about 1/N of the bytes: any N reads
//! the same records. A JSON Lines unit after a file's first does not know its first line's
//! number (that needs every byte before it); it counts lines from its own start and reports
//! how many it read, and the merge numbers them ([`UnitInfo`]).

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{columnar, is_columnar, is_remote, layout_of, open_hashing, split_compression, Digest, Layout};
use super::{JsonLines, Object, Records, ValueScanner};
use crate::error::{Error, Result};

/// Units wanted over all inputs, so that up to this many parts get work from a small corpus.
const UNITS_WANTED: u64 = 64;
/// Bounds of a byte-range unit: each costs a part one partial line read twice, and large
/// corpora should not make a work list of millions.
const MIN_UNIT_BYTES: u64 = 16 << 10;
const MAX_UNIT_BYTES: u64 = 64 << 20;

/// Where a unit lies in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "span", rename_all = "snake_case")]
pub enum Span {
    /// The whole file, from its start.
    File,
    /// The JSON Lines records whose line starts at a byte in `start..end`.
    Bytes { start: u64, end: u64 },
    /// One Parquet row group; `first_row` is its first row's 0-based number in the file.
    RowGroup { index: usize, first_row: u64 },
}

/// One piece of the inputs, read on its own.
#[derive(Debug, Clone)]
pub struct WorkUnit {
    /// The file's index in the job's input list.
    pub file: u32,
    pub path: PathBuf,
    pub span: Span,
    /// Bytes the unit covers (its share of the work).
    pub bytes: u64,
    /// A Parquet file's footer, read once for all its row groups.
    pub footer: Option<columnar::Footer>,
}

impl WorkUnit {
    pub fn whole(file: u32, path: &Path) -> Self {
        WorkUnit {
            file,
            path: path.to_path_buf(),
            span: Span::File,
            bytes: 0,
            footer: None,
        }
    }
}

/// A unit as a partitioned pack's manifest records it: its place, and the number of its first
/// line (its first row, for a row group) once known. A document's source in such a pack is a
/// unit and a line counted from the unit's first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    pub file: u32,
    #[serde(flatten)]
    pub span: Span,
    /// The 1-based number of the unit's first line in its file.
    pub first_line: Option<u64>,
    /// Lines the unit read (blank ones too), once a part read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
}

impl UnitInfo {
    pub fn of(unit: &WorkUnit) -> Self {
        let first_line = match unit.span {
            Span::File | Span::RowGroup { .. } | Span::Bytes { start: 0, .. } => Some(1),
            Span::Bytes { .. } => None,
        };
        UnitInfo {
            file: unit.file,
            span: unit.span,
            first_line,
            lines: None,
        }
    }
}

/// Numbers the first line of every byte-range unit from the line counts of the units before it
/// in its file (each read by some part). Units whose count is missing stay unnumbered.
pub fn number_lines(units: &mut [UnitInfo]) {
    let mut next_line: Option<u64> = None;
    for unit in units.iter_mut() {
        if let Span::Bytes { start, .. } = unit.span {
            if start > 0 {
                unit.first_line = next_line;
            }
            next_line = unit.first_line.zip(unit.lines).map(|(first, lines)| first + lines);
        }
    }
}

/// Cuts the inputs (`sizes` in bytes, from their metadata) into work units.
pub fn work_list(files: &[PathBuf], sizes: &[u64]) -> Result<Vec<WorkUnit>> {
    let total: u64 = sizes.iter().sum();
    let unit_bytes = (total / UNITS_WANTED).clamp(MIN_UNIT_BYTES, MAX_UNIT_BYTES);
    let mut units = Vec::new();
    for (index, (path, &size)) in files.iter().zip(sizes).enumerate() {
        let file = index as u32;
        let unit = |span, bytes| WorkUnit {
            file,
            path: path.clone(),
            span,
            bytes,
            footer: None,
        };
        if columnar::is_parquet(path) {
            let footer = columnar::footer(path)?;
            let mut first_row = 0;
            for (group, (rows, bytes)) in columnar::row_groups(&footer).into_iter().enumerate() {
                let span = Span::RowGroup {
                    index: group,
                    first_row,
                };
                units.push(WorkUnit {
                    footer: Some(footer.clone()),
                    ..unit(span, bytes)
                });
                first_row += rows;
            }
        } else if splittable(path) && size > unit_bytes {
            let mut start = 0;
            while start < size {
                let end = (start + unit_bytes).min(size);
                units.push(unit(Span::Bytes { start, end }, end - start));
                start = end;
            }
        } else {
            units.push(unit(Span::File, size));
        }
    }
    Ok(units)
}

/// Only uncompressed JSON Lines can start reading at any byte.
fn splittable(path: &Path) -> bool {
    !is_columnar(path) && layout_of(path) == Layout::JsonLines && split_compression(path).1.is_none()
}

/// The units part `index` of `count` reads, with their ids (places in the work list): a run of
/// consecutive units, each going to the part its middle byte falls in.
pub fn part_of(units: &[WorkUnit], count: u64, index: u64) -> Vec<(u32, WorkUnit)> {
    let total = units.iter().map(|u| u.bytes).sum::<u64>().max(1) as u128;
    let mut before = 0u128;
    let mut mine = Vec::new();
    for (id, unit) in units.iter().enumerate() {
        let middle = before + unit.bytes as u128 / 2;
        before += unit.bytes as u128;
        let owner = ((middle * count as u128) / total).min(count as u128 - 1) as u64;
        if owner == index {
            mine.push((id as u32, unit.clone()));
        }
    }
    mine
}

/// What reading a unit found out besides its records, complete once they are: lines read, and
/// the sha256 of a local JSON file read whole.
#[derive(Clone, Default)]
pub struct UnitReport {
    lines: Arc<AtomicU64>,
    digest: Option<Digest>,
}

impl UnitReport {
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    pub fn sha256(&self) -> Option<String> {
        self.digest.as_ref().and_then(Digest::finish)
    }
}

/// Streams the records of a unit; `id`, when given, marks each record as read in that unit.
pub fn open(unit: &WorkUnit, id: Option<u32>) -> Result<(Records, UnitReport)> {
    let path = unit.path.as_path();
    let mut report = UnitReport::default();
    let records: Records = match unit.span {
        Span::RowGroup { index, first_row } => {
            columnar::records(unit.file, path, Some((index, first_row)), unit.footer.clone())?
        }
        Span::File if is_columnar(path) => columnar::records(unit.file, path, None, None)?,
        Span::File => {
            report.digest = (!is_remote(path)).then(Digest::default);
            let reader = open_hashing(path, report.digest.clone())?;
            match layout_of(path) {
                Layout::JsonLines => Box::new(JsonLines {
                    file: unit.file,
                    path: path.to_path_buf(),
                    reader,
                    lines: report.lines.clone(),
                    offset: 0,
                    end: None,
                    skip_partial_line: false,
                    buf: Vec::new(),
                }),
                Layout::JsonValues => Box::new(ValueScanner::new(unit.file, path.to_path_buf(), reader)),
                Layout::PlainText => Box::new(std::iter::once(super::plain_text_record(unit.file, path, reader))),
            }
        }
        Span::Bytes { start, end } => {
            // From the byte before the unit: a line starting exactly at `start` is the unit's.
            let from = start.saturating_sub(1);
            Box::new(JsonLines {
                file: unit.file,
                path: path.to_path_buf(),
                reader: Box::new(RangeReader::open(path, from, end)?),
                lines: report.lines.clone(),
                offset: from,
                end: Some(end),
                skip_partial_line: start > 0,
                buf: Vec::new(),
            })
        }
    };
    let Some(id) = id else {
        return Ok((records, report));
    };
    let marked = records.map(move |record| {
        record.map(|mut r| {
            r.unit = Some(id);
            r
        })
    });
    Ok((Box::new(marked), report))
}

/// Blocks fetched up to a unit's end, and past it (the unit's last line) in small ones, a
/// sixteenth of the unit within these bounds, so a unit reads little beyond its range.
const BODY_BLOCK: u64 = 4 << 20;
const TAIL_BLOCKS: (u64, u64) = (1 << 10, 64 << 10);

/// A file or object read from a byte on, in blocks sized by where they fall against `end`.
struct RangeReader {
    source: RangeSource,
    path: PathBuf,
    position: u64,
    end: u64,
    tail_block: u64,
    block: Vec<u8>,
    consumed: usize,
}

enum RangeSource {
    Local(File),
    Remote { object: Object, size: u64 },
}

impl RangeReader {
    fn open(path: &Path, from: u64, end: u64) -> Result<Self> {
        let source = if is_remote(path) {
            let object = Object::new(&path.display().to_string())?;
            let (size, _) = object.head()?;
            RangeSource::Remote { object, size }
        } else {
            RangeSource::Local(File::open(path).map_err(|e| Error::io(path, e))?)
        };
        Ok(RangeReader {
            source,
            path: path.to_path_buf(),
            position: from,
            end,
            tail_block: ((end - from) / 16).clamp(TAIL_BLOCKS.0, TAIL_BLOCKS.1),
            block: Vec::new(),
            consumed: 0,
        })
    }

    fn fetch(&mut self) -> std::io::Result<()> {
        let wanted = if self.position < self.end {
            (self.end - self.position).min(BODY_BLOCK)
        } else {
            self.tail_block
        };
        self.block = match &self.source {
            RangeSource::Local(file) => read_at(file, self.position, wanted)?,
            RangeSource::Remote { object, size } => {
                let end = (self.position + wanted).min(*size);
                if end <= self.position {
                    Vec::new()
                } else {
                    object.range(self.position..end)?.to_vec()
                }
            }
        };
        self.position += self.block.len() as u64;
        self.consumed = 0;
        Ok(())
    }
}

/// Up to `length` bytes of `file` at `offset` (fewer at its end), counted as input read.
fn read_at(file: &File, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut block = vec![0u8; length as usize];
    let mut filled = 0;
    while filled < block.len() {
        match file.read_at(&mut block[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    block.truncate(filled);
    crate::profile::read_input(filled);
    Ok(block)
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for RangeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.consumed == self.block.len() {
            self.fetch()
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))?;
        }
        Ok(&self.block[self.consumed..])
    }

    fn consume(&mut self, amount: usize) {
        self.consumed = (self.consumed + amount).min(self.block.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sftpack-units-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn offsets_and_lines(unit: &WorkUnit) -> (Vec<(u64, u64)>, u64) {
        let (records, report) = open(unit, Some(0)).expect("open");
        let read = records
            .map(|r| r.map(|r| (r.offset, r.line)).expect("record"))
            .collect();
        (read, report.lines())
    }

    #[test]
    fn byte_ranges_give_each_record_to_the_unit_its_line_starts_in() {
        let dir = scratch("ranges");
        // records start at bytes 0, 8, 17 (after a blank line at 16) and 25
        let path = write(&dir, "a.jsonl", "{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n{\"d\":4}");
        let size = std::fs::metadata(&path).expect("meta").len();
        for cut in 1..size {
            let units = [(0, cut), (cut, size)].map(|(start, end)| WorkUnit {
                file: 0,
                path: path.clone(),
                span: Span::Bytes { start, end },
                bytes: end - start,
                footer: None,
            });
            let (first, first_lines) = offsets_and_lines(&units[0]);
            let (second, second_lines) = offsets_and_lines(&units[1]);
            let offsets: Vec<u64> = first.iter().chain(&second).map(|(o, _)| *o).collect();
            assert_eq!(offsets, [0, 8, 17, 25], "cut at {cut}");
            assert_eq!(first_lines + second_lines, 5, "cut at {cut}");
            let mut infos: Vec<UnitInfo> = units.iter().map(UnitInfo::of).collect();
            infos[0].lines = Some(first_lines);
            infos[1].lines = Some(second_lines);
            number_lines(&mut infos);
            let absolute: Vec<u64> = first
                .iter()
                .map(|(_, l)| *l)
                .chain(
                    second
                        .iter()
                        .map(|(_, l)| infos[1].first_line.expect("numbered") - 1 + l),
                )
                .collect();
            assert_eq!(absolute, [1, 2, 4, 5], "cut at {cut}");
        }
    }

    #[test]
    fn the_work_list_depends_on_the_inputs_and_parts_share_it_out() {
        let dir = scratch("list");
        let line = format!("{{\"text\":\"{}\"}}\n", "x".repeat(1000));
        let big = write(&dir, "big.jsonl", &line.repeat(1000));
        let small = write(&dir, "small.json", "[{\"a\":1}]");
        let files = [big.clone(), small];
        let sizes = [1_001_000, 9];
        let units = work_list(&files, &sizes).expect("units");
        assert!(units.len() > 10, "the JSON Lines file is cut: {}", units.len());
        assert_eq!(units.last().map(|u| u.span), Some(Span::File));
        for count in [1, 2, 3, 7, 100] {
            let ids: Vec<u32> = (0..count)
                .flat_map(|index| part_of(&units, count, index).into_iter().map(|(id, _)| id))
                .collect();
            let all: Vec<u32> = (0..units.len() as u32).collect();
            assert_eq!(ids, all, "each unit once, in order, for {count} parts");
        }
    }
}
