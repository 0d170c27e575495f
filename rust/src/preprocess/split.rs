//! Split: which records are held out for validation.
//!
//! A share (`fraction`) or a number (`documents`) of the records read is chosen by a seeded
//! sample of record positions, before any record is encoded:
//!
//! ```text
//! records (in input order)   0 1 2 3 4 5 6 7 8 9      total 10, fraction 0.2 -> 2 records
//! seeded sample of positions     2         7          -> validation pack
//! every other record                                  -> training pack
//! ```
//!
//! The choice depends on the seed and the record count only, so it is the same for any thread
//! count and on resume; a record is in exactly one of the two packs.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pack::SplitMix64;
use crate::pipeline::Partition;
use crate::read;

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
    /// How many of `total` records to hold out: a fraction rounds to the nearest count, at
    /// least one; a count is capped at all records but one, so training keeps some.
    pub fn count(self, total: u64) -> Result<u64> {
        let wanted = match self {
            ValidationSize::Fraction(f) if f > 0.0 && f < 1.0 => ((f * total as f64).round() as u64).max(1),
            ValidationSize::Fraction(f) => {
                return Err(Error::config(format!("validation fraction {f} is not between 0 and 1"))
                    .hint("pass a share such as 0.05, or a number of documents such as 500"))
            }
            ValidationSize::Documents(0) => {
                return Err(Error::config("a validation split of 0 documents")
                    .hint("leave `val_size` out for no validation split"))
            }
            ValidationSize::Documents(n) => n,
        };
        if total < 2 || wanted >= total {
            return Err(Error::config(format!(
                "a validation split of {wanted} record(s) leaves nothing to train on: the inputs hold {total} record(s)"
            ))
            .hint("use a smaller `val_size`"));
        }
        Ok(wanted)
    }
}

/// The positions (0-based, in input order over all files) of the held-out records.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    held_out: HashSet<u64>,
}

impl Selection {
    /// Counts the records of `files` (framing only, nothing is parsed or encoded) and samples
    /// the held-out positions with `seed`; in a partitioned run, keeps those of the part (the
    /// parts' selections together are the unpartitioned run's).
    pub fn choose(files: &[PathBuf], size: ValidationSize, seed: u64, partition: Option<Partition>) -> Result<Self> {
        let mut total = 0u64;
        for (index, path) in files.iter().enumerate() {
            for record in read::records(index as u32, path)? {
                record?;
                total += 1;
            }
        }
        let mut held_out = sample(total, size.count(total)?, seed);
        if let Some(part) = partition {
            held_out.retain(|&position| part.owns(position));
        }
        Ok(Selection { held_out })
    }

    pub fn contains(&self, position: u64) -> bool {
        self.held_out.contains(&position)
    }

    pub fn len(&self) -> usize {
        self.held_out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held_out.is_empty()
    }
}

/// `count` distinct positions below `total`, uniformly at random (Floyd's algorithm: memory in
/// proportion to `count`, not `total`).
fn sample(total: u64, count: u64, seed: u64) -> HashSet<u64> {
    let mut rng = SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut chosen = HashSet::with_capacity(count as usize);
    for upper in total - count..total {
        let candidate = rng.next_u64() % (upper + 1);
        if !chosen.insert(candidate) {
            chosen.insert(upper);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_become_counts() {
        assert_eq!(ValidationSize::Fraction(0.05).count(1000).ok(), Some(50));
        assert_eq!(ValidationSize::Fraction(0.001).count(100).ok(), Some(1), "at least one");
        assert_eq!(ValidationSize::Documents(7).count(100).ok(), Some(7));
        assert!(
            ValidationSize::Documents(100).count(100).is_err(),
            "nothing left to train on"
        );
        assert!(ValidationSize::Fraction(1.5).count(100).is_err());
        assert!(ValidationSize::Documents(0).count(100).is_err());
    }

    #[test]
    fn the_sample_is_seeded_distinct_and_in_range() {
        for (total, count) in [(10, 3), (1000, 999), (5, 1), (100_000, 5_000)] {
            let a = sample(total, count, 7);
            assert_eq!(a.len() as u64, count);
            assert!(a.iter().all(|&p| p < total));
            assert_eq!(a, sample(total, count, 7));
        }
        assert_ne!(sample(1000, 10, 1), sample(1000, 10, 2));
    }

    #[test]
    fn every_position_is_equally_likely() {
        let mut hits = [0u32; 10];
        for seed in 0..20_000 {
            for p in sample(10, 3, seed) {
                hits[p as usize] += 1;
            }
        }
        // 6,000 expected per position; 5 standard deviations is about 325
        assert!(hits.iter().all(|&h| (5_675..=6_325).contains(&h)), "{hits:?}");
    }
}
