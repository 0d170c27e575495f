//! Read: turn input paths into a stream of raw records, each with its exact location.
//!
//! Files are streamed, never loaded whole. Supported layouts:
//! - JSON Lines (`.jsonl`): one record per non-blank line;
//! - a top-level JSON array (`.json`, the XTuner docs' layout): one record per element;
//! - one or more top-level JSON objects one after another (`.json`, e.g. one conversation per file);
//! - plain text (`.txt`, in a raw-text job): the whole file one document;
//!
//! each optionally compressed as `.gz` or `.zst`; and columnar files, a row per record
//! (`.parquet`, Arrow IPC `.arrow`/`.feather`: see `columnar.rs`). A UTF-8 BOM and CRLF line ends
//! are accepted. A directory stands for every such file inside it, recursively, in sorted order,
//! leaving out hidden entries and the folders that are not data: sftpack's packs and training
//! runs, and model, adapter and tokenizer folders (see [`not_data`]). A `datasets`
//! `save_to_disk` folder stands for its Arrow files, in the order its `state.json` lists them.

mod columnar;
mod remote;
mod scan;
pub mod units;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Problem, Result};

pub use columnar::is_columnar;
pub use remote::{is_remote, Object};
pub use scan::ValueScanner;
pub use units::{UnitReport, WorkUnit};

/// One record as read from disk, before parsing.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// Index of the file in the job's input list.
    pub file: u32,
    /// 1-based line where the record starts.
    pub line: u64,
    /// 0-based element index when the file is a JSON array.
    pub index: Option<u64>,
    /// Where the record starts in its file: the byte offset of a JSON record (in the
    /// decompressed text), the 0-based row of a columnar one. With `file`, what identifies a
    /// record however the file is cut into work units (the validation split hashes it).
    pub offset: u64,
    /// The work unit (see [`units`]) the record was read in, when a partitioned run reads the
    /// inputs in units: `line` then counts from the unit's first line.
    pub unit: Option<u32>,
    /// The record's JSON text, or why it could not be cut out of the file. Empty for a columnar
    /// row, which arrives as an object (`row`) and needs no text unless one is asked for.
    pub text: std::result::Result<String, Problem>,
    /// A columnar row, already the object of its columns (not written as JSON text to be parsed
    /// again).
    pub row: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// When a map function ran: the record as read (`text` then holds what the function made of
    /// it, or why it failed). Rejects show both.
    pub mapped_from: Option<String>,
}

impl RawRecord {
    /// The record as JSON text (a row written out, for rejects and map functions), or why it
    /// could not be read.
    pub fn json_text(&self) -> std::result::Result<std::borrow::Cow<'_, str>, &Problem> {
        match (&self.row, &self.text) {
            (Some(row), _) => Ok(std::borrow::Cow::Owned(
                serde_json::to_string(row.as_ref()).unwrap_or_default(),
            )),
            (None, Ok(text)) => Ok(std::borrow::Cow::Borrowed(text)),
            (None, Err(problem)) => Err(problem),
        }
    }

    /// The record as a JSON object: the row as it is, or the text parsed.
    pub fn object(
        &self,
    ) -> std::result::Result<std::borrow::Cow<'_, serde_json::Map<String, serde_json::Value>>, Problem> {
        match (&self.row, &self.text) {
            (Some(row), _) => Ok(std::borrow::Cow::Borrowed(&**row)),
            (None, Ok(text)) => crate::schema::parse_json(text).map(std::borrow::Cow::Owned),
            (None, Err(problem)) => Err(problem.clone()),
        }
    }
}

/// How records are laid out inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    JsonLines,
    JsonValues,
    /// A plain text file: one raw-text document, `{"text": <the whole file>}`.
    PlainText,
}

const DATA_EXTENSIONS: [&str; 2] = ["json", "jsonl"];
const TEXT_EXTENSION: &str = "txt";
const COMPRESSED_EXTENSIONS: [&str; 2] = ["gz", "zst"];

/// Files that mark a folder as something other than data, and what it then is: sftpack's own
/// outputs (a pack, finished or in progress; a training run) and model, adapter and tokenizer
/// folders, whose JSON files are not records.
const NOT_DATA_MARKERS: [(&str, &str); 8] = [
    ("manifest.json", "an sftpack pack"),
    ("progress.json", "an sftpack pack being written"),
    ("sftpack_train.json", "a model saved by sftpack train"),
    ("metrics.jsonl", "an sftpack training run"),
    ("config.json", "a model folder"),
    ("adapter_config.json", "an adapter folder"),
    ("tokenizer.json", "a tokenizer folder"),
    ("tokenizer_config.json", "a tokenizer folder"),
];

/// What a folder is when it is not data (see `NOT_DATA_MARKERS`), or None for a data folder.
pub fn not_data(dir: &Path) -> Option<&'static str> {
    NOT_DATA_MARKERS
        .iter()
        .find(|(marker, _)| dir.join(marker).is_file())
        .map(|(_, what)| *what)
}

/// Expands directories into the data files they contain (sorted, recursive) and checks that
/// every named file exists. Inside a directory, hidden entries and folders that are not data
/// ([`not_data`]) are left out, and so are .txt files unless the job reads raw text
/// (`raw_text`); a directory named as an input that is not data is an error.
pub fn expand_inputs(paths: &[PathBuf], raw_text: bool) -> Result<Vec<PathBuf>> {
    let is_input = |path: &Path| is_data_file(path) || (raw_text && layout_of(path) == Layout::PlainText);
    let mut files = Vec::new();
    for path in paths {
        if is_remote(path) {
            files.extend(remote::expand(&path.display().to_string(), is_input)?);
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            if let Some(what) = not_data(path) {
                return Err(Error::input(format!("{} is {what}, not a dataset", path.display()))
                    .hint("name the dataset files, or the folder that holds them"));
            }
            if let Some(splits) = dataset_dict_splits(path)? {
                return Err(Error::input(format!(
                    "{} is a `datasets` DatasetDict with the splits {}",
                    path.display(),
                    splits.join(", ")
                ))
                .hint(format!(
                    "name the split to read, e.g. {}",
                    path.join(&splits[0]).display()
                )));
            }
            let before = files.len();
            collect_dir(path, &mut files, &is_input)?;
            if files.len() == before {
                return Err(Error::input(format!(
                    "directory {} holds no .json or .jsonl files (optionally .gz or .zst), nor .parquet or \
                     .arrow files",
                    path.display()
                )));
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn collect_dir(dir: &Path, files: &mut Vec<PathBuf>, is_input: &dyn Fn(&Path) -> bool) -> Result<()> {
    if let Some(arrow_files) = saved_dataset_files(dir)? {
        files.extend(arrow_files);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|entry| entry.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for path in entries {
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            if not_data(&path).is_none() {
                collect_dir(&path, files, is_input)?;
            }
        } else if is_input(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// The Arrow files of a `datasets` `save_to_disk` folder (it holds `state.json` with
/// `_data_files`), in their order; None for any other folder.
fn saved_dataset_files(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let state = dir.join("state.json");
    if !state.is_file() || !dir.join("dataset_info.json").is_file() {
        return Ok(None);
    }
    let text = read_to_string(&state)?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::input(format!("{}: not a `datasets` state file: {e}", state.display())))?;
    let names: Option<Vec<&str>> = parsed
        .get("_data_files")
        .and_then(|f| f.as_array())
        .map(|files| files.iter().filter_map(|f| f.get("filename")?.as_str()).collect());
    match names {
        Some(names) if !names.is_empty() => Ok(Some(names.iter().map(|n| dir.join(n)).collect())),
        _ => Err(
            Error::input(format!("{} lists no data files (`_data_files`)", state.display()))
                .hint("save the dataset again with `datasets`' save_to_disk"),
        ),
    }
}

/// The split names of a `datasets` DatasetDict folder (`dataset_dict.json`), or None.
fn dataset_dict_splits(dir: &Path) -> Result<Option<Vec<String>>> {
    let file = dir.join("dataset_dict.json");
    if !file.is_file() {
        return Ok(None);
    }
    let parsed: serde_json::Value = serde_json::from_str(&read_to_string(&file)?)
        .map_err(|e| Error::input(format!("{}: not a `datasets` DatasetDict file: {e}", file.display())))?;
    let splits: Vec<String> = parsed
        .get("splits")
        .and_then(|s| s.as_array())
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok((!splits.is_empty()).then_some(splits))
}

fn is_data_file(path: &Path) -> bool {
    if is_columnar(path) {
        return true;
    }
    let (stem, _) = split_compression(path);
    let ext = Path::new(&stem)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    ext.is_some_and(|e| DATA_EXTENSIONS.contains(&e.as_str()))
}

/// Splits `x.jsonl.gz` into (`x.jsonl`, Some("gz")).
fn split_compression(path: &Path) -> (String, Option<&'static str>) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in COMPRESSED_EXTENSIONS {
        if let Some(stem) = name.strip_suffix(&format!(".{ext}")) {
            return (stem.to_string(), Some(ext));
        }
    }
    (name, None)
}

/// Opens an input (a file, or an object streamed from its store), decompressing by extension;
/// its bytes count as input read ([`crate::profile::input_bytes`]).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_hashing(path, None)
}

/// [`open`], feeding a local file's bytes (as stored, before decompression) to `digest`.
fn open_hashing(path: &Path, digest: Option<Digest>) -> Result<Box<dyn BufRead + Send>> {
    if is_remote(path) {
        return decompressed(path, Object::new(&path.display().to_string())?.stream()?);
    }
    let file = crate::profile::CountingReader(File::open(path).map_err(|e| Error::io(path, e))?);
    let raw: Box<dyn BufRead + Send> = match digest {
        Some(digest) => Box::new(BufReader::with_capacity(1 << 20, Hashing { inner: file, digest })),
        None => Box::new(BufReader::with_capacity(1 << 20, file)),
    };
    decompressed(path, raw)
}

/// The sha256 of a file's bytes, fed as a reader reads them; [`Digest::finish`] gives it once
/// the file was read to its end.
#[derive(Clone, Default)]
pub struct Digest(std::sync::Arc<std::sync::Mutex<Option<sha2::Sha256>>>);

impl Digest {
    fn update(&self, bytes: &[u8]) {
        use sha2::Digest as _;
        if let Ok(mut hasher) = self.0.lock() {
            hasher.get_or_insert_with(sha2::Sha256::new).update(bytes);
        }
    }

    /// The hex digest of everything fed (of an empty file too).
    pub fn finish(&self) -> Option<String> {
        use sha2::Digest as _;
        let hasher = self.0.lock().ok()?.take().unwrap_or_default();
        Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }
}

struct Hashing<R> {
    inner: R,
    digest: Digest,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

fn decompressed(path: &Path, raw: Box<dyn BufRead + Send>) -> Result<Box<dyn BufRead + Send>> {
    let reader: Box<dyn BufRead + Send> = match split_compression(path).1 {
        Some("gz") => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(raw),
        )),
        Some(_) => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| Error::input(format!("{} is not a valid zstd file: {e}", path.display())))?;
            Box::new(BufReader::with_capacity(1 << 20, decoder))
        }
        None => Box::new(raw),
    };
    Ok(reader)
}

/// Chooses the layout: `.jsonl` files are line-based, `.txt` files one raw document; other
/// files hold JSON values (an array's elements, or objects one after another).
pub fn layout_of(path: &Path) -> Layout {
    let (stem, _) = split_compression(path);
    let stem = stem.to_ascii_lowercase();
    if stem.ends_with(".jsonl") {
        Layout::JsonLines
    } else if stem.ends_with(&format!(".{TEXT_EXTENSION}")) {
        Layout::PlainText
    } else {
        Layout::JsonValues
    }
}

/// A plain text file as one raw-text record: `{"text": <the whole file>}`, at line 1.
fn plain_text_record(file: u32, path: &Path, mut reader: Box<dyn BufRead + Send>) -> Result<RawRecord> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let (text, row) = match decode_utf8(bytes) {
        Ok(text) => {
            let mut row = serde_json::Map::new();
            row.insert("text".into(), serde_json::Value::String(text.to_string()));
            (Ok(String::new()), Some(Box::new(row)))
        }
        Err(problem) => (Err(problem), None),
    };
    Ok(RawRecord {
        file,
        line: 1,
        index: None,
        offset: 0,
        unit: None,
        text,
        row,
        mapped_from: None,
    })
}

/// A Parquet file's rows, from its footer (nothing else is read); None for other files.
pub fn parquet_rows(path: &Path) -> Result<Option<u64>> {
    if !columnar::is_parquet(path) {
        return Ok(None);
    }
    let footer = columnar::footer(path)?;
    Ok(Some(columnar::row_groups(&footer).iter().map(|(rows, _)| rows).sum()))
}

/// Streams the records of one file.
pub fn records(file_index: u32, path: &Path) -> Result<Records> {
    Ok(units::open(&WorkUnit::whole(file_index, path), None)?.0)
}

pub type Records = Box<dyn Iterator<Item = Result<RawRecord>> + Send>;

/// JSON Lines: every non-blank line is one record. Read whole, or one work unit of the file:
/// the lines that start in a byte range (see [`units`]).
pub(crate) struct JsonLines {
    file: u32,
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Lines read so far (blank ones too), shared with the unit's report.
    lines: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where the next unread byte lies in the (decompressed) file.
    offset: u64,
    /// A line starting here or later belongs to the next unit.
    end: Option<u64>,
    /// The reader starts one byte before the unit, inside a line the unit before it owns.
    skip_partial_line: bool,
    buf: Vec<u8>,
}

impl JsonLines {
    fn next_line(&mut self) -> std::io::Result<usize> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl Iterator for JsonLines {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if std::mem::take(&mut self.skip_partial_line) {
            if let Err(e) = self.next_line() {
                return Some(Err(Error::io(&self.path, e)));
            }
        }
        loop {
            if self.end.is_some_and(|end| self.offset >= end) {
                return None;
            }
            let start = self.offset;
            match self.next_line() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(Error::io(&self.path, e))),
            }
            let line = 1 + self.lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut bytes = self.buf.as_slice();
            if start == 0 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = decode_utf8(bytes).map(|s| s.trim_end_matches(['\n', '\r']).to_string());
            return Some(Ok(RawRecord {
                file: self.file,
                line,
                index: None,
                offset: start,
                unit: None,
                text,
                row: None,
                mapped_from: None,
            }));
        }
    }
}

pub(crate) fn decode_utf8(bytes: &[u8]) -> std::result::Result<&str, Problem> {
    std::str::from_utf8(bytes).map_err(|e| {
        Problem::new(
            "invalid_utf8",
            "",
            format!("the record is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
        .hint("re-encode the file as UTF-8, e.g. `iconv -f GBK -t UTF-8 in.jsonl > out.jsonl`")
    })
}

/// Reads a whole small file (configs, templates), naming the path on failure.
pub fn read_to_string(path: &Path) -> Result<String> {
    let mut text = String::new();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    decompressed(path, Box::new(BufReader::new(file)))?
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    Ok(text)
}
