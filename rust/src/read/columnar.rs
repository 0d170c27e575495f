//! Columnar inputs: Parquet files (the Hub's format), Arrow IPC files (`.arrow`, `.feather`) and
//! Arrow IPC streams (what `datasets`' `save_to_disk` writes). They are read a row group or
//! record batch at a time, never whole; each row becomes one record, located by its 1-based row
//! number in the file (reported where a JSON Lines record reports its line).
//!
//! A row is the object of its columns: `messages` as `list<struct<role, content, ...>>` reads as
//! OpenAI messages, a `conversation` column as XTuner's, and so on; every format and check of
//! JSON records applies. A null reads as absent (an optional field left empty by a writer that
//! unified several schemas), inside structs and at the top level; a null list element stays null.
//! A column of a type JSON cannot hold (bytes, timestamps, ...) makes that row's record a reject
//! naming the column, never a silent drop.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, DataType};
use serde_json::{Map, Number, Value};

use super::remote::RemoteFile;
use super::RawRecord;
use crate::error::{Error, Problem, Result};

/// Rows decoded at a time: a record batch's worth of records stays small beside the pipeline's
/// own batches.
const BATCH_ROWS: usize = 1024;

const PARQUET_EXTENSIONS: [&str; 1] = ["parquet"];
const ARROW_EXTENSIONS: [&str; 3] = ["arrow", "feather", "ipc"];
const EXTENSIONS: [&str; 4] = ["parquet", "arrow", "feather", "ipc"];

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase)
}

/// Whether `path` names a columnar file (by its extension).
pub fn is_columnar(path: &Path) -> bool {
    extension(path).is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// A Parquet file's footer, read once per job and handed to each of its row groups' readers.
pub(super) type Footer = parquet::arrow::arrow_reader::ArrowReaderMetadata;

/// Streams the rows of one columnar file as records: all of them, or those of one Parquet row
/// group (`Some((index, first_row))`, its first row's 0-based number in the file), with the
/// file's footer when it was read already.
pub(super) fn records(
    file_index: u32,
    path: &Path,
    row_group: Option<(usize, u64)>,
    footer: Option<Footer>,
) -> Result<Box<dyn Iterator<Item = Result<RawRecord>> + Send>> {
    let batches = open_batches(path, row_group.map(|(index, _)| index), footer)?;
    Ok(Box::new(Rows {
        file: file_index,
        path: path.to_path_buf(),
        batches,
        current: None,
        next_row: 0,
        row: row_group.map_or(0, |(_, first_row)| first_row),
    }))
}

/// Whether `path` is a Parquet file (whose row groups can be read apart).
pub(super) fn is_parquet(path: &Path) -> bool {
    extension(path).is_some_and(|e| PARQUET_EXTENSIONS.contains(&e.as_str()))
}

/// A Parquet file's footer (nothing else is read).
pub(super) fn footer(path: &Path) -> Result<Footer> {
    let options = parquet::arrow::arrow_reader::ArrowReaderOptions::default();
    let loaded = if super::is_remote(path) {
        Footer::load(&RemoteFile::open(&path.display().to_string())?, options)
    } else {
        Footer::load(
            &CountingFile(File::open(path).map_err(|e| Error::io(path, e))?),
            options,
        )
    };
    loaded.map_err(|e| unreadable(path, "Parquet", e))
}

/// The rows and compressed bytes of each row group a footer lists.
pub(super) fn row_groups(footer: &Footer) -> Vec<(u64, u64)> {
    footer
        .metadata()
        .row_groups()
        .iter()
        .map(|group| (group.num_rows().max(0) as u64, group.compressed_size().max(0) as u64))
        .collect()
}

type Batches = Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

fn unreadable(path: &Path, what: &str, error: impl std::fmt::Display) -> Error {
    Error::input(format!("{} is not a readable {what} file: {error}", path.display()))
        .hint("the file may be truncated or still being written: copy or download it again")
}

fn open_batches(path: &Path, row_group: Option<usize>, footer: Option<Footer>) -> Result<Batches> {
    let ext = extension(path).unwrap_or_default();
    if super::is_remote(path) {
        let file = RemoteFile::open(&path.display().to_string())?;
        return if PARQUET_EXTENSIONS.contains(&ext.as_str()) {
            remote_parquet_batches(path, file, row_group, footer)
        } else if is_ipc_file(file.clone_at_start())? {
            ipc_file_batches(path, file)
        } else {
            ipc_stream_batches(path, super::open(path)?)
        };
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if PARQUET_EXTENSIONS.contains(&ext.as_str()) {
        return parquet_batches(path, CountingFile(file), row_group, footer);
    }
    debug_assert!(ARROW_EXTENSIONS.contains(&ext.as_str()));
    if is_ipc_file(File::open(path).map_err(|e| Error::io(path, e))?)? {
        return ipc_file_batches(path, crate::profile::CountingReader(file));
    }
    ipc_stream_batches(
        path,
        Box::new(BufReader::with_capacity(1 << 20, crate::profile::CountingReader(file))),
    )
}

/// A local Parquet file whose ranged reads count as input bytes.
struct CountingFile(File);

impl parquet::file::reader::Length for CountingFile {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

impl parquet::file::reader::ChunkReader for CountingFile {
    type T = crate::profile::CountingReader<<File as parquet::file::reader::ChunkReader>::T>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        self.0.get_read(start).map(crate::profile::CountingReader)
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        let bytes = self.0.get_bytes(start, length)?;
        crate::profile::read_input(bytes.len());
        Ok(bytes)
    }
}

/// An Arrow IPC file starts with the magic "ARROW1"; a stream (datasets' save_to_disk) does not.
fn is_ipc_file(mut reader: impl Read) -> Result<bool> {
    let mut magic = [0u8; 6];
    Ok(reader.read_exact(&mut magic).is_ok() && &magic == b"ARROW1")
}

fn parquet_batches(
    path: &Path,
    file: impl parquet::file::reader::ChunkReader + 'static,
    row_group: Option<usize>,
    footer: Option<Footer>,
) -> Result<Batches> {
    let reader = parquet_builder(file, footer)
        .map(|builder| only_row_group(builder, row_group))
        .and_then(|builder| builder.with_batch_size(BATCH_ROWS).build())
        .map_err(|e| unreadable(path, "Parquet", e))?;
    Ok(Box::new(reader))
}

type Builder<T> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T>;

/// A reader of a Parquet file, from its footer when read already.
fn parquet_builder<T: parquet::file::reader::ChunkReader + 'static>(
    file: T,
    footer: Option<Footer>,
) -> parquet::errors::Result<Builder<T>> {
    match footer {
        Some(footer) => Ok(Builder::new_with_metadata(file, footer)),
        None => Builder::try_new(file),
    }
}

fn only_row_group<T: parquet::file::reader::ChunkReader + 'static>(
    builder: parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T>,
    row_group: Option<usize>,
) -> parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder<T> {
    match row_group {
        Some(index) => builder.with_row_groups(vec![index]),
        None => builder,
    }
}

/// A Parquet object: the footer first, then one ranged GET per row group.
fn remote_parquet_batches(
    path: &Path,
    file: RemoteFile,
    row_group: Option<usize>,
    footer: Option<Footer>,
) -> Result<Batches> {
    let handle = file.clone_at_start();
    let builder = parquet_builder(file, footer).map_err(|e| unreadable(path, "Parquet", e))?;
    let ranges = builder
        .metadata()
        .row_groups()
        .iter()
        .filter_map(|group| {
            let spans = group.columns().iter().map(|column| column.byte_range());
            let start = spans.clone().map(|(start, _)| start).min()?;
            let end = spans.map(|(start, length)| start + length).max()?;
            Some(start..end)
        })
        .collect();
    handle.set_row_groups(ranges);
    let reader = only_row_group(builder, row_group)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| unreadable(path, "Parquet", e))?;
    Ok(Box::new(reader))
}

fn ipc_file_batches(path: &Path, file: impl Read + std::io::Seek + Send + 'static) -> Result<Batches> {
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).map_err(|e| unreadable(path, "Arrow IPC", e))?;
    Ok(Box::new(reader))
}

fn ipc_stream_batches(path: &Path, stream: Box<dyn std::io::BufRead + Send>) -> Result<Batches> {
    let reader =
        arrow_ipc::reader::StreamReader::try_new(stream, None).map_err(|e| unreadable(path, "Arrow IPC", e))?;
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(reader);
    Ok(Box::new(reader))
}

struct Rows {
    file: u32,
    path: PathBuf,
    batches: Batches,
    current: Option<RecordBatch>,
    /// The next row of `current` to hand out.
    next_row: usize,
    /// Rows of the file before the next one handed out.
    row: u64,
}

impl Iterator for Rows {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = &self.current {
                if self.next_row < batch.num_rows() {
                    let (text, row) = match row_object(batch, self.next_row) {
                        Ok(object) => (Ok(String::new()), Some(Box::new(object))),
                        Err(problem) => (Err(problem), None),
                    };
                    self.next_row += 1;
                    self.row += 1;
                    return Some(Ok(RawRecord {
                        file: self.file,
                        line: self.row,
                        index: None,
                        offset: self.row - 1,
                        unit: None,
                        text,
                        row,
                        mapped_from: None,
                    }));
                }
            }
            match self.batches.next()? {
                Ok(batch) => {
                    self.current = Some(batch);
                    self.next_row = 0;
                }
                Err(e) => {
                    return Some(Err(Error::input(format!(
                        "{}: rows after row {} cannot be read: {e}",
                        self.path.display(),
                        self.row
                    ))
                    .hint("the file may be truncated or damaged: copy or download it again")))
                }
            }
        }
    }
}

/// One row as the object of its columns (nulls left out).
fn row_object(batch: &RecordBatch, row: usize) -> std::result::Result<Map<String, Value>, Problem> {
    let mut object = Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if column.is_null(row) {
            continue;
        }
        object.insert(field.name().clone(), value_at(column.as_ref(), row, field.name())?);
    }
    Ok(object)
}

fn number<T: Into<Number>>(value: T) -> Value {
    Value::Number(value.into())
}

fn float(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The JSON value of `array[row]`; `path` names it in a problem (`messages[2].content`).
fn value_at(array: &dyn Array, row: usize, path: &str) -> std::result::Result<Value, Problem> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => number(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => number(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => number(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => number(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => number(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => number(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => number(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => number(array.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref(), path)?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref(), path)?,
        DataType::FixedSizeList(..) => list(array.as_fixed_size_list().value(row).as_ref(), path)?,
        DataType::Struct(fields) => {
            let columns = array.as_struct().columns();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(columns) {
                if !column.is_null(row) {
                    let inner = format!("{path}.{}", field.name());
                    object.insert(field.name().clone(), value_at(column.as_ref(), row, &inner)?);
                }
            }
            Value::Object(object)
        }
        DataType::Dictionary(..) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            value_at(dictionary.values().as_ref(), key, path)?
        }
        other => {
            return Err(Problem::new(
                "unsupported_column_type",
                path,
                format!("the column holds {other}, which a chat record cannot hold"),
            )
            .hint("write text, numbers, booleans, lists and structs (convert or drop this column first)"))
        }
    })
}

fn list(values: &dyn Array, path: &str) -> std::result::Result<Value, Problem> {
    (0..values.len())
        .map(|i| value_at(values, i, &format!("{path}[{i}]")))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
    use arrow_array::{BinaryArray, Int64Array, StringArray};
    use arrow_schema::{Field, Fields, Schema};

    use super::*;

    fn messages_column(rows: &[&[(&str, Option<&str>)]]) -> Arc<dyn Array> {
        let fields = Fields::from(vec![
            Field::new("role", DataType::Utf8, true),
            Field::new("content", DataType::Utf8, true),
        ]);
        let mut builder = ListBuilder::new(StructBuilder::from_fields(fields, 4));
        for messages in rows {
            for (role, content) in *messages {
                let item = builder.values();
                item.field_builder::<StringBuilder>(0).expect("role").append_value(role);
                item.field_builder::<StringBuilder>(1)
                    .expect("content")
                    .append_option(*content);
                item.append(true);
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    }

    #[test]
    fn a_row_is_the_object_of_its_columns_with_nulls_left_out() {
        let messages = messages_column(&[&[("user", Some("hi")), ("assistant", None)]]);
        let tag: Arc<dyn Array> = Arc::new(StringArray::from(vec![None::<&str>]));
        let id: Arc<dyn Array> = Arc::new(Int64Array::from(vec![7]));
        let schema = Schema::new(vec![
            Field::new("messages", messages.data_type().clone(), true),
            Field::new("tag", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![messages, tag, id]).expect("batch");
        assert_eq!(
            Value::Object(row_object(&batch, 0).expect("object")).to_string(),
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant"}],"id":7}"#
        );
    }

    #[test]
    fn a_column_json_cannot_hold_is_a_problem_naming_it() {
        let bytes: Arc<dyn Array> = Arc::new(BinaryArray::from(vec![b"\x00".as_slice()]));
        let schema = Schema::new(vec![Field::new("audio", DataType::Binary, false)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![bytes]).expect("batch");
        let problem = row_object(&batch, 0).expect_err("binary");
        assert_eq!(
            (problem.kind, problem.path.as_str()),
            ("unsupported_column_type", "audio")
        );
    }
}
