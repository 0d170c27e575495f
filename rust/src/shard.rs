//! Shard: write packed rows into Arrow IPC files (`sftpack-pack` v1), uncompressed so readers
//! can memory-map them, rolled over at a size limit, each written to a temporary name and
//! renamed into place only when complete (a crash never leaves a half shard under a real name).
//!
//! Columns, one row per packed sequence:
//! `input_ids` list<int32>, `loss_mask` list<uint8> (1 = trained), `cu_seqlens` list<int32>
//! (0, end of doc 1, ..., row length), `source_file` list<int32> and `source_line` list<int64>
//! (one entry per document).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, UInt8Array};
use arrow_buffer::OffsetBuffer;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One packed sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub input_ids: Vec<i32>,
    pub loss_mask: Vec<u8>,
    pub cu_seqlens: Vec<i32>,
    pub source_file: Vec<i32>,
    pub source_line: Vec<i64>,
}

impl Row {
    fn bytes(&self) -> usize {
        self.input_ids.len() * 5 + self.cu_seqlens.len() * 4 + self.source_file.len() * 12 + 32
    }

    /// The format's invariants; a violation is a bug in sftpack, never in the data.
    pub fn validate(&self, max_length: Option<usize>) -> Result<()> {
        let n = self.input_ids.len();
        let fail = |what: &str| {
            Err(Error::output(format!(
                "internal error: a packed row breaks an invariant: {what}"
            )))
        };
        if self.loss_mask.len() != n {
            return fail("loss_mask and input_ids differ in length");
        }
        if self.cu_seqlens.first() != Some(&0) || self.cu_seqlens.last().map(|&l| l as usize) != Some(n) {
            return fail("cu_seqlens must start at 0 and end at the row length");
        }
        if self.cu_seqlens.windows(2).any(|w| w[0] >= w[1]) {
            return fail("cu_seqlens must increase strictly");
        }
        let docs = self.cu_seqlens.len() - 1;
        if self.source_file.len() != docs || self.source_line.len() != docs {
            return fail("one source entry per document");
        }
        if max_length.is_some_and(|m| n > m) {
            return fail("row longer than max_length");
        }
        if self.cu_seqlens[..docs].iter().any(|&s| self.loss_mask[s as usize] != 0) {
            return fail("the first token of a document is trained");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub rows: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
}

pub fn schema() -> Arc<Schema> {
    let list = |name: &str, item: DataType| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new_list_field(item, false))),
            false,
        )
    };
    Arc::new(Schema::new(vec![
        list("input_ids", DataType::Int32),
        list("loss_mask", DataType::UInt8),
        list("cu_seqlens", DataType::Int32),
        list("source_file", DataType::Int32),
        list("source_line", DataType::Int64),
    ]))
}

fn list_column<T, A>(rows: &[Row], get: impl Fn(&Row) -> &[T], make: impl Fn(Vec<T>) -> A) -> Result<ArrayRef>
where
    T: Copy,
    A: arrow_array::Array + 'static,
{
    let mut values = Vec::new();
    let mut lengths = Vec::with_capacity(rows.len());
    for row in rows {
        let part = get(row);
        values.extend_from_slice(part);
        lengths.push(part.len());
    }
    let values: ArrayRef = Arc::new(make(values));
    let item = Arc::new(Field::new_list_field(values.data_type().clone(), false));
    let list = ListArray::try_new(item, OffsetBuffer::from_lengths(lengths), values, None)
        .map_err(|e| Error::output(format!("cannot build an Arrow column: {e}")))?;
    Ok(Arc::new(list))
}

fn batch(rows: &[Row]) -> Result<RecordBatch> {
    let columns = vec![
        list_column(rows, |r| &r.input_ids, Int32Array::from)?,
        list_column(rows, |r| &r.loss_mask, UInt8Array::from)?,
        list_column(rows, |r| &r.cu_seqlens, Int32Array::from)?,
        list_column(rows, |r| &r.source_file, Int32Array::from)?,
        list_column(rows, |r| &r.source_line, Int64Array::from)?,
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| Error::output(format!("cannot build an Arrow batch: {e}")))
}

/// Hashes everything written through it.
struct HashingWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct OpenShard {
    writer: FileWriter<HashingWriter>,
    temporary: PathBuf,
    name: String,
    rows: u64,
    tokens: u64,
    bytes: usize,
}

/// Writes rows into `shard-NNNNN.arrow` files under `dir`.
pub struct ShardWriter {
    dir: PathBuf,
    size_limit: usize,
    next_index: usize,
    open: Option<OpenShard>,
    pending: Vec<Row>,
    pending_bytes: usize,
    pub finished: Vec<ShardInfo>,
}

const BATCH_BYTES: usize = 8 << 20;

pub fn shard_name(index: usize) -> String {
    format!("shard-{index:05}.arrow")
}

impl ShardWriter {
    /// `next_index` continues numbering after shards a resumed run already has.
    pub fn new(dir: &Path, size_limit: usize, next_index: usize) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            size_limit: size_limit.max(1),
            next_index,
            open: None,
            pending: Vec::new(),
            pending_bytes: 0,
            finished: Vec::new(),
        }
    }

    pub fn write(&mut self, row: Row) -> Result<()> {
        let size = row.bytes();
        let open_bytes = self.open.as_ref().map_or(0, |s| s.bytes);
        if open_bytes + self.pending_bytes + size > self.size_limit && open_bytes + self.pending_bytes > 0 {
            self.close_shard()?;
        }
        self.pending_bytes += size;
        self.pending.push(row);
        if self.pending_bytes >= BATCH_BYTES {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn open_shard(&mut self) -> Result<&mut OpenShard> {
        if self.open.is_none() {
            let name = shard_name(self.next_index);
            self.next_index += 1;
            let temporary = self.dir.join(format!("{name}.tmp"));
            let file = File::create(&temporary).map_err(|e| Error::io(&temporary, e))?;
            let sink = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: Sha256::new(),
                bytes: 0,
            };
            let writer = FileWriter::try_new(sink, &schema())
                .map_err(|e| Error::output(format!("cannot start {}: {e}", temporary.display())))?;
            self.open = Some(OpenShard {
                writer,
                temporary,
                name,
                rows: 0,
                tokens: 0,
                bytes: 0,
            });
        }
        self.open.as_mut().ok_or_else(|| Error::output("no open shard"))
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let record_batch = batch(&rows)?;
        let shard = self.open_shard()?;
        shard
            .writer
            .write(&record_batch)
            .map_err(|e| Error::output(format!("cannot write {}: {e}", shard.temporary.display())))?;
        shard.rows += rows.len() as u64;
        shard.tokens += rows.iter().map(|r| r.input_ids.len() as u64).sum::<u64>();
        shard.bytes += bytes;
        Ok(())
    }

    /// Finishes the open shard (if any) and moves it into place.
    pub fn close_shard(&mut self) -> Result<()> {
        self.flush_batch()?;
        let Some(mut shard) = self.open.take() else {
            return Ok(());
        };
        let fail =
            |e: &dyn std::fmt::Display, path: &Path| Error::output(format!("cannot finish {}: {e}", path.display()));
        shard.writer.finish().map_err(|e| fail(&e, &shard.temporary))?;
        let sink = shard.writer.into_inner().map_err(|e| fail(&e, &shard.temporary))?;
        let HashingWriter { inner, hasher, bytes } = sink;
        let file = inner.into_inner().map_err(|e| fail(&e, &shard.temporary))?;
        file.sync_all().map_err(|e| Error::io(&shard.temporary, e))?;
        let target = self.dir.join(&shard.name);
        std::fs::rename(&shard.temporary, &target).map_err(|e| Error::io(&target, e))?;
        let digest = hasher.finalize();
        self.finished.push(ShardInfo {
            file: shard.name,
            rows: shard.rows,
            tokens: shard.tokens,
            bytes,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(len: usize) -> Row {
        Row {
            input_ids: (0..len as i32).collect(),
            loss_mask: (0..len).map(|i| u8::from(i > 0)).collect(),
            cu_seqlens: vec![0, len as i32],
            source_file: vec![0],
            source_line: vec![1],
        }
    }

    #[test]
    fn rows_roll_over_into_shards_at_the_size_limit() {
        let dir = std::env::temp_dir().join(format!("sftpack-shard-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut writer = ShardWriter::new(&dir, 2_000, 0);
        for _ in 0..10 {
            writer.write(row(100)).expect("write");
        }
        writer.close_shard().expect("close");
        let rows: u64 = writer.finished.iter().map(|s| s.rows).sum();
        assert_eq!(rows, 10);
        assert!(writer.finished.len() >= 3);
        assert!(writer.finished.iter().all(|s| dir.join(&s.file).is_file()));
        assert!(!std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "tmp")));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn invariants_catch_broken_rows() {
        assert!(row(5).validate(Some(5)).is_ok());
        assert!(row(5).validate(Some(4)).is_err());
        let mut trained_first = row(5);
        trained_first.loss_mask[0] = 1;
        assert!(trained_first.validate(None).is_err());
        let mut bad_cu = row(5);
        bad_cu.cu_seqlens = vec![0, 3];
        assert!(bad_cu.validate(None).is_err());
    }
}
