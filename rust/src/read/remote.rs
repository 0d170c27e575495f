//! Object-store inputs: `s3://bucket/key`, `gs://bucket/key`, `az://container/key` (and Azure's
//! `abfs://`/`https://…blob.core.windows.net/…`), `http(s)://host/file`, read through the
//! `object_store` crate: JSON files streamed by one GET, columnar files by ranged GETs (a
//! Parquet footer, then the column chunks of each row group), each request retried with backoff.
//!
//! Credentials come from the usual environment, as each cloud's own tools read it:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL` (an S3-compatible server: MinIO, R2, moto); `GOOGLE_SERVICE_ACCOUNT`,
//! `GOOGLE_APPLICATION_CREDENTIALS`; `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_TOKEN`. Plain `http://` is allowed only to a loopback endpoint (tests,
//! local servers); anything else goes over TLS.
//!
//! A URL that names no single object is a prefix: it stands for the data objects under it, in
//! sorted key order, as a directory does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

const SCHEMES: [&str; 8] = [
    "s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "http://", "https://",
];
const LOOPBACK: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];
/// Bytes fetched at a time where a reader seeks (Arrow IPC files): few requests, bounded memory.
const BLOCK: u64 = 8 << 20;
/// Bytes fetched at a time where Parquet's reader reads on from a position (a column chunk's
/// pages): it stops anywhere, so little is fetched past where it stops.
const PAGE_BLOCK: u64 = 256 << 10;

/// Whether `path` is an object-store URL rather than a local path.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|p| SCHEMES.iter().any(|s| p.starts_with(s)))
}

/// rustls needs one process-wide crypto provider before any client is built (another may be
/// installed already). ring's: no C crypto library to build; its lack of post-quantum key
/// exchange is rustls' reason to deprecate it, which matters little for reading datasets.
fn install_crypto() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sftpack-object-store")
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
    })
}

/// An object: its store, its key in the store, and the URL it was named by.
#[derive(Clone)]
pub struct Object {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    url: String,
}

fn failed(url: &str, error: impl std::fmt::Display) -> Error {
    Error::input(format!("{url}: {error}")).hint(
        "check the URL and the credentials in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / \
         AWS_REGION / AWS_ENDPOINT_URL for S3; GOOGLE_APPLICATION_CREDENTIALS for gs://; AZURE_STORAGE_* for az://)",
    )
}

/// Whether the store behind `url` is reached on this machine: plain HTTP is allowed there.
fn loopback_endpoint(url: &Url) -> bool {
    let endpoint = match url.scheme() {
        "http" | "https" => Some(url.as_str().to_string()),
        "s3" | "s3a" => std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .ok(),
        _ => None,
    };
    endpoint
        .and_then(|e| Url::parse(&e).ok())
        .and_then(|e| e.host_str().map(str::to_string))
        .is_some_and(|host| LOOPBACK.contains(&host.as_str()) || host == "::1")
}

/// The store for a URL's bucket (or host), built once from the environment and shared.
fn store_for(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    install_crypto();
    let parsed = Url::parse(url).map_err(|e| failed(url, format!("not a URL: {e}")))?;
    if parsed.scheme() == "http" && !loopback_endpoint(&parsed) {
        return Err(
            Error::input(format!("{url}: plain http is allowed only to this machine (127.0.0.1)")).hint("use https://"),
        );
    }
    let mut options: Vec<(String, String)> = std::env::vars().collect();
    if loopback_endpoint(&parsed) {
        options.push(("allow_http".into(), "true".into()));
    }
    // One store per bucket (or host) and the credentials and endpoint it was built with.
    let settings: Vec<&(String, String)> = options
        .iter()
        .filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p)))
        .collect();
    let root = format!("{}://{} {settings:?}", parsed.scheme(), parsed.authority());
    let (built, key) = object_store::parse_url_opts(&parsed, options).map_err(|e| failed(url, e))?;
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::input("the object-store registry was poisoned by a panic"))?;
    let store = stores.entry(root).or_insert_with(|| Arc::from(built)).clone();
    Ok((store, key))
}

impl Object {
    pub fn new(url: &str) -> Result<Self> {
        let (store, key) = store_for(url)?;
        Ok(Object {
            store,
            key,
            url: url.to_string(),
        })
    }

    /// Size and ETag, without reading the object.
    pub fn head(&self) -> Result<(u64, Option<String>)> {
        let meta = runtime()
            .block_on(self.store.head(&self.key))
            .map_err(|e| failed(&self.url, e))?;
        Ok((meta.size, meta.e_tag))
    }

    /// The whole object as one streamed GET.
    pub fn stream(&self) -> Result<Box<dyn BufRead + Send>> {
        let result = runtime()
            .block_on(self.store.get(&self.key))
            .map_err(|e| failed(&self.url, e))?;
        let stream = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Box::new(BufReader::with_capacity(1 << 20, BlockingStream::new(stream))))
    }

    /// Bytes `range` of the object (one ranged GET).
    pub fn range(&self, range: std::ops::Range<u64>) -> std::io::Result<Bytes> {
        let bytes = runtime()
            .block_on(self.store.get_range(&self.key, range))
            .map_err(std::io::Error::other)?;
        crate::profile::read_input(bytes.len());
        Ok(bytes)
    }
}

/// The object URLs a URL names: itself when it is an object, else the objects under it as a
/// prefix (sorted), for which `keep` says yes.
pub(super) fn expand(url: &str, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    if !url.ends_with('/') && Object::new(url)?.head().is_ok() {
        return Ok(vec![PathBuf::from(url)]);
    }
    let (store, key) = store_for(url)?;
    let listed: Vec<object_store::ObjectMeta> = runtime()
        .block_on(store.list(Some(&key)).try_collect())
        .map_err(|e| failed(url, e))?;
    let base = url.trim_end_matches('/');
    let prefix = key.as_ref();
    let mut found: Vec<PathBuf> = listed
        .iter()
        .filter_map(|meta| {
            let relative = meta.location.as_ref().strip_prefix(prefix)?.trim_start_matches('/');
            let hidden = relative.split('/').any(|part| part.starts_with('.'));
            let path = PathBuf::from(format!("{base}/{relative}"));
            (!hidden && keep(&path)).then_some(path)
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::input(format!(
            "{url}: no object is named so, and no data object lies under it"
        ))
        .hint("check the URL (a prefix stands for the .jsonl/.json/.parquet/.arrow objects under it)"));
    }
    Ok(found)
}

/// A stream of byte chunks read as a blocking `Read`, one chunk at a time.
struct BlockingStream {
    stream: BoxStream<'static, std::io::Result<Bytes>>,
    current: Bytes,
}

impl BlockingStream {
    fn new(stream: BoxStream<'static, std::io::Result<Bytes>>) -> Self {
        BlockingStream {
            stream,
            current: Bytes::new(),
        }
    }
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match runtime().block_on(self.stream.next()) {
                Some(chunk) => {
                    self.current = chunk?;
                    crate::profile::read_input(self.current.len());
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An object read at any position: Parquet's reader asks for byte ranges (the footer, then
/// column chunks), Arrow's file reader seeks. Reads go to the store in blocks.
pub(super) struct RemoteFile {
    object: Object,
    size: u64,
    position: u64,
    block: (u64, Bytes),
    block_size: u64,
    row_groups: Arc<Mutex<RowGroups>>,
}

/// A Parquet file's row groups as byte ranges, and those fetched lately: their column chunks
/// are read from memory, so each row group costs one ranged GET. A batch of rows may span a few
/// small row groups, whose columns are read one after another: the last ones fetched stay, up to
/// [`ROW_GROUP_CACHE`] bytes (and always the last one, however large).
#[derive(Default)]
pub(super) struct RowGroups {
    ranges: Vec<std::ops::Range<u64>>,
    fetched: std::collections::VecDeque<(std::ops::Range<u64>, Bytes)>,
}

const ROW_GROUP_CACHE: usize = 64 << 20;

impl RowGroups {
    /// The bytes of the row group holding `start..end`, fetched if they are not at hand.
    fn bytes_for(&mut self, object: &Object, start: u64, end: u64) -> std::io::Result<Option<Bytes>> {
        let Some(range) = self.ranges.iter().find(|r| r.start <= start && end <= r.end).cloned() else {
            return Ok(None);
        };
        let at = (start - range.start) as usize..(end - range.start) as usize;
        if let Some((_, bytes)) = self.fetched.iter().find(|(r, _)| *r == range) {
            return Ok(Some(bytes.slice(at)));
        }
        let bytes = object.range(range.clone())?;
        self.fetched.push_back((range, bytes.clone()));
        while self.fetched.len() > 1 && self.fetched.iter().map(|(_, b)| b.len()).sum::<usize>() > ROW_GROUP_CACHE {
            self.fetched.pop_front();
        }
        Ok(Some(bytes.slice(at)))
    }
}

impl RemoteFile {
    pub(super) fn open(url: &str) -> Result<Self> {
        let object = Object::new(url)?;
        let (size, _) = object.head()?;
        Ok(RemoteFile {
            object,
            size,
            position: 0,
            block: (0, Bytes::new()),
            block_size: BLOCK,
            row_groups: Arc::default(),
        })
    }
}

impl RemoteFile {
    /// Another reader of the same object, at its start (no request until it reads).
    pub(super) fn clone_at_start(&self) -> RemoteFile {
        self.reader_at(0, BLOCK)
    }

    fn reader_at(&self, position: u64, block_size: u64) -> RemoteFile {
        RemoteFile {
            object: self.object.clone(),
            size: self.size,
            position,
            block: (0, Bytes::new()),
            block_size,
            row_groups: self.row_groups.clone(),
        }
    }

    /// Tells the reader where the row groups lie (from the footer), so that reading a column
    /// chunk fetches its whole row group once.
    pub(super) fn set_row_groups(&self, ranges: Vec<std::ops::Range<u64>>) {
        if let Ok(mut row_groups) = self.row_groups.lock() {
            row_groups.ranges = ranges;
        }
    }

    /// Bytes `start..end` from a row group fetched once, if they lie in one.
    fn row_group_bytes(&self, start: u64, end: u64) -> std::io::Result<Option<Bytes>> {
        self.row_groups
            .lock()
            .map_err(|_| std::io::Error::other("a reader thread panicked"))?
            .bytes_for(&self.object, start, end)
    }

    /// The end of the row group holding `start`, if the row groups are known.
    fn row_group_end(&self, start: u64) -> Option<u64> {
        let row_groups = self.row_groups.lock().ok()?;
        row_groups.ranges.iter().find(|r| r.contains(&start)).map(|r| r.end)
    }
}

impl Read for RemoteFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.position >= self.size {
            return Ok(0);
        }
        let (start, block) = &self.block;
        if self.position < *start || self.position >= start + block.len() as u64 {
            let end = (self.position + self.block_size).min(self.size);
            self.block = (self.position, self.object.range(self.position..end)?);
        }
        let (start, block) = &self.block;
        let from = (self.position - start) as usize;
        let n = buf.len().min(block.len() - from);
        buf[..n].copy_from_slice(&block[from..from + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for RemoteFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.size as i128 + d as i128,
            SeekFrom::Current(d) => self.position as i128 + d as i128,
        };
        if target < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.position = target as u64;
        Ok(self.position)
    }
}

impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        let external = |e: std::io::Error| parquet::errors::ParquetError::External(Box::new(e));
        if let Some(end) = self.row_group_end(start) {
            if let Some(bytes) = self.row_group_bytes(start, end).map_err(external)? {
                return Ok(Box::new(bytes.reader()));
            }
        }
        Ok(Box::new(self.reader_at(start, PAGE_BLOCK)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let end = start + length as u64;
        let external = |e: std::io::Error| parquet::errors::ParquetError::External(Box::new(e));
        if let Some(bytes) = self.row_group_bytes(start, end).map_err(external)? {
            return Ok(bytes);
        }
        self.object
            .range(start..start + length as u64)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}
