//! Split: which records are held out for validation.
//!
//! Every record gets a score, a seeded hash of where it lies (its file's place in the inputs,
//! and its byte offset or row there); the records scoring below a bound are held out:
//!
//! ```text
//! record (file, offset)   (0, 0)  (0, 812)  (0, 1630)  (1, 0)  (1, 95)
//! score / 2^64             0.71    0.03      0.55       0.12    0.98
//! fraction 0.1: bound 0.1          held out
//! ```
//!
//! A share sets the bound itself: each record is held out with that probability, and nothing is
//! read beforehand. A number of records sets it just above that many records' lowest scores,
//! which takes a counting pass first (the offsets of JSON records; a Parquet file's rows from
//! its footer). Either way the choice depends on the seed and the records' places alone, so it
//! is the same for any thread count, any number of parts and on resume, and a record is in
//! exactly one of the two packs.

use std::collections::BinaryHeap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pack::SplitMix64;
use crate::read::{self, RawRecord};

/// How much of the corpus to hold out.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ValidationSize {
    /// This share of the records read, in (0, 1).
    Fraction(f64),
    /// This many records.
    Documents(u64),
}

impl ValidationSize {
    fn check(self) -> Result<Self> {
        match self {
            ValidationSize::Fraction(f) if f > 0.0 && f < 1.0 => Ok(self),
            ValidationSize::Fraction(f) => {
                Err(Error::config(format!("validation fraction {f} is not between 0 and 1"))
                    .hint("pass a share such as 0.05, or a number of documents such as 500"))
            }
            ValidationSize::Documents(0) => {
                Err(Error::config("a validation split of 0 documents")
                    .hint("leave `val_size` out for no validation split"))
            }
            ValidationSize::Documents(_) => Ok(self),
        }
    }
}

/// The held-out records: those whose score is below `bound`.
#[derive(Debug, Clone)]
pub struct Selection {
    seed: u64,
    bound: u64,
}

impl Selection {
    /// The selection of `size` records for `seed`. A number of records counts the records of
    /// `files` first (framing only, nothing is parsed or encoded).
    pub fn choose(files: &[PathBuf], size: ValidationSize, seed: u64) -> Result<Self> {
        let bound = match size.check()? {
            ValidationSize::Fraction(f) => (f * 2f64.powi(64)) as u64,
            ValidationSize::Documents(n) => bound_for_count(files, n, seed)?,
        };
        Ok(Selection { seed, bound })
    }

    pub fn contains(&self, record: &RawRecord) -> bool {
        score(self.seed, record.file, record.offset) < self.bound
    }
}

/// Fails when a run (or the merge of its parts) held out nothing, or everything: a share of a
/// small corpus can.
pub fn check_outcome(held_out: u64, kept: u64) -> Result<()> {
    if held_out > 0 && kept > 0 {
        return Ok(());
    }
    let what = if held_out == 0 { "none" } else { "all" };
    Err(Error::config(format!(
        "the validation split held out {what} of the {} record(s) read",
        held_out + kept
    ))
    .hint(
        "a share holds out each record with that probability: for a small corpus give a number of records \
           (`val_size: 2`), or another `seed`",
    ))
}

/// A record's score: a seeded hash of its file's place and its offset there.
fn score(seed: u64, file: u32, offset: u64) -> u64 {
    let mix = |x: u64| SplitMix64::new(x).next_u64();
    mix(mix(mix(seed ^ 0x5EED_5EED) ^ u64::from(file)) ^ offset)
}

/// The bound that holds out the `count` lowest-scoring records of `files`.
fn bound_for_count(files: &[PathBuf], count: u64, seed: u64) -> Result<u64> {
    let mut lowest: BinaryHeap<u64> = BinaryHeap::with_capacity(count as usize + 1);
    let mut total = 0u64;
    let mut keep = |file: u32, offset: u64| {
        total += 1;
        lowest.push(score(seed, file, offset));
        if lowest.len() as u64 > count {
            lowest.pop();
        }
    };
    for (index, path) in files.iter().enumerate() {
        let file = index as u32;
        match read::parquet_rows(path)? {
            Some(rows) => (0..rows).for_each(|row| keep(file, row)),
            None => {
                for record in read::records(file, path)? {
                    keep(file, record?.offset);
                }
            }
        }
    }
    if total < 2 || count >= total {
        return Err(Error::config(format!(
            "a validation split of {count} record(s) leaves nothing to train on: the inputs hold {total} record(s)"
        ))
        .hint("use a smaller `val_size`"));
    }
    Ok(lowest.peek().map_or(0, |highest| highest.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert!(ValidationSize::Fraction(0.05).check().is_ok());
        assert!(ValidationSize::Documents(7).check().is_ok());
        assert!(ValidationSize::Fraction(1.5).check().is_err());
        assert!(ValidationSize::Fraction(0.0).check().is_err());
        assert!(ValidationSize::Documents(0).check().is_err());
    }

    #[test]
    fn scores_are_seeded_and_spread_evenly() {
        assert_ne!(score(1, 0, 0), score(2, 0, 0));
        assert_ne!(score(1, 0, 1), score(1, 1, 0));
        let mut buckets = [0u32; 10];
        for file in 0..10 {
            for offset in (0..60_000u64).map(|i| i * 97) {
                buckets[(score(3, file, offset) / (u64::MAX / 10)).min(9) as usize] += 1;
            }
        }
        // 60,000 expected per tenth; 5 standard deviations is about 1,160
        assert!(buckets.iter().all(|&b| (58_840..=61_160).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn a_share_holds_out_about_that_share_and_a_number_exactly_that_many() {
        let dir = std::env::temp_dir().join(format!("sftpack-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.jsonl");
        std::fs::write(&path, "{\"a\":1}\n".repeat(2000)).expect("write");
        let files = [path];
        let held = |selection: &Selection| {
            read::records(0, &files[0])
                .expect("records")
                .filter(|r| selection.contains(r.as_ref().expect("record")))
                .count()
        };
        let share = Selection::choose(&files, ValidationSize::Fraction(0.1), 7).expect("share");
        assert!((150..=250).contains(&held(&share)), "{}", held(&share));
        let count = Selection::choose(&files, ValidationSize::Documents(37), 7).expect("count");
        assert_eq!(held(&count), 37);
        assert!(Selection::choose(&files, ValidationSize::Documents(2000), 7).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
