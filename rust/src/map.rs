//! Map: an optional stage between reading and parsing that turns records of any shape into a
//! supported format, with a user's function (XTuner's `dataset_map_fn`; Python behind the pyo3
//! layer). It sees one batch of record texts at a time, in input order, and answers one result
//! per record:
//!
//! ```text
//! read ──> [texts of a batch] ──> mapper.map_batch ──> [mapped texts | why each failed] ──> parse …
//!          file:line kept                               the record as read kept beside it
//! ```
//!
//! A record the function fails on becomes a `map_fn_error` reject with the reason, its original
//! file:line and the record as read, so the counts still reconcile. Nothing is written in between
//! and every record keeps its own location, for rejects and the pack's provenance columns alike.

use serde::{Deserialize, Serialize};

use crate::error::{Problem, Result};
use crate::read::RawRecord;

/// What a job records about its map function: the key covers it, so that a changed function
/// means a new pack while an unchanged one lets a re-run do nothing, before any record is mapped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MapFnIdentity {
    /// How the user named it (`file.py:function`, `module:function`, a built-in).
    pub spec: String,
    /// A hash of its source (its module's file, where there is one).
    pub fingerprint: String,
}

/// The function itself.
pub trait RecordMapper: Sync {
    /// One result per text, in order: the mapped record's JSON text, or why it failed. An `Err`
    /// for the whole batch stops the job (the caller was interrupted, or the function cannot run).
    fn map_batch(&self, texts: &[&str]) -> Result<Vec<std::result::Result<String, String>>>;
}

fn failure(reason: String) -> Problem {
    Problem::new("map_fn_error", "", format!("the map function failed: {reason}"))
        .hint("fix the map function or this record; the record as read is under \"record\" in rejects.jsonl")
}

/// Maps `records` in place. Records that could not be read stay as they are.
pub fn map_records(mapper: &dyn RecordMapper, records: &mut [RawRecord]) -> Result<()> {
    let readable: Vec<usize> = (0..records.len()).filter(|&i| records[i].text.is_ok()).collect();
    let owned: Vec<std::borrow::Cow<'_, str>> = readable.iter().filter_map(|&i| records[i].json_text().ok()).collect();
    let texts: Vec<&str> = owned.iter().map(|t| t.as_ref()).collect();
    let results = mapper.map_batch(&texts)?;
    let originals: Vec<String> = owned.into_iter().map(|t| t.into_owned()).collect();
    if results.len() != readable.len() {
        return Err(crate::error::Error::config(format!(
            "the map function answered {} results for {} records",
            results.len(),
            readable.len()
        )));
    }
    for ((i, result), original) in readable.into_iter().zip(results).zip(originals) {
        let record = &mut records[i];
        record.text = result.map_err(failure);
        record.row = None;
        record.mapped_from = Some(original);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;

    impl RecordMapper for Upper {
        fn map_batch(&self, texts: &[&str]) -> Result<Vec<std::result::Result<String, String>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    if t.contains("bad") {
                        Err("KeyError: 'q'".into())
                    } else {
                        Ok(t.to_uppercase())
                    }
                })
                .collect())
        }
    }

    fn record(line: u64, text: std::result::Result<&str, Problem>) -> RawRecord {
        RawRecord {
            file: 0,
            line,
            index: None,
            text: text.map(str::to_string),
            row: None,
            offset: line,
            unit: None,
            mapped_from: None,
        }
    }

    #[test]
    fn each_record_keeps_its_place_and_what_was_read() {
        let unreadable = Problem::new("invalid_utf8", "", "x");
        let mut records = vec![
            record(1, Ok("{\"q\": 1}")),
            record(2, Err(unreadable.clone())),
            record(3, Ok("bad")),
        ];
        map_records(&Upper, &mut records).expect("maps");
        assert_eq!(records[0].text.as_deref().ok(), Some("{\"Q\": 1}"));
        assert_eq!(records[0].mapped_from.as_deref(), Some("{\"q\": 1}"));
        assert_eq!(
            records[1].text.as_ref().err(),
            Some(&unreadable),
            "unreadable records are not mapped"
        );
        assert!(records[1].mapped_from.is_none());
        let failed = records[2].text.as_ref().expect_err("failed");
        assert_eq!((failed.kind, records[2].line), ("map_fn_error", 3));
        assert!(failed.message.contains("KeyError"));
        assert_eq!(records[2].mapped_from.as_deref(), Some("bad"));
    }
}
