//! Tally: how a job's records turned out. Every record read is encoded, rejected (invalid) or
//! dropped (valid but unusable), so `records_read = packed + rejected + dropped` always; `check`
//! and `preprocess` count with this one tally.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::encode::Outcome;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub records_read: u64,
    /// Encoded (and, in preprocess, packed).
    pub packed: u64,
    pub rejected: u64,
    pub dropped: u64,
    /// Rejected records by the kind of their first problem.
    pub rejected_by_kind: BTreeMap<String, u64>,
    pub dropped_by_reason: BTreeMap<String, u64>,
    pub truncated: u64,
    pub tokens: u64,
    pub trained_tokens: u64,
}

impl Tally {
    pub fn count(&mut self, outcome: &Outcome) {
        self.records_read += 1;
        match outcome {
            Outcome::Encoded(encoded) => {
                self.packed += 1;
                self.truncated += u64::from(encoded.truncated_from.is_some());
                self.tokens += encoded.ids.len() as u64;
                self.trained_tokens += encoded.trained_tokens() as u64;
            }
            Outcome::Rejected(problems) => {
                self.rejected += 1;
                let kind = problems.first().map_or("unknown", |p| p.kind);
                *self.rejected_by_kind.entry(kind.to_string()).or_default() += 1;
            }
            Outcome::Dropped { problem, .. } => {
                self.dropped += 1;
                *self.dropped_by_reason.entry(problem.kind.to_string()).or_default() += 1;
            }
        }
    }

    /// Adds another tally's counts (of another part of the same job) to these.
    pub fn add(&mut self, other: &Tally) {
        self.records_read += other.records_read;
        self.packed += other.packed;
        self.rejected += other.rejected;
        self.dropped += other.dropped;
        self.truncated += other.truncated;
        self.tokens += other.tokens;
        self.trained_tokens += other.trained_tokens;
        for (kind, n) in &other.rejected_by_kind {
            *self.rejected_by_kind.entry(kind.clone()).or_default() += n;
        }
        for (reason, n) in &other.dropped_by_reason {
            *self.dropped_by_reason.entry(reason.clone()).or_default() += n;
        }
    }

    /// Whether the counts add up: every record read is in exactly one of the three.
    pub fn reconciles(&self) -> bool {
        self.records_read == self.packed + self.rejected + self.dropped
            && self.rejected == self.rejected_by_kind.values().sum::<u64>()
            && self.dropped == self.dropped_by_reason.values().sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Encoded;
    use crate::error::Problem;

    #[test]
    fn every_outcome_lands_in_one_count() {
        let mut tally = Tally::default();
        let encoded = Encoded {
            ids: vec![1, 2, 3],
            mask: vec![0, 1, 1],
            truncated_from: Some(5),
            chunk_length: None,
        };
        tally.count(&Outcome::Encoded(encoded));
        tally.count(&Outcome::Rejected(vec![
            Problem::new("invalid_json", "", "x"),
            Problem::new("unknown_role", "", "y"),
        ]));
        tally.count(&Outcome::Dropped {
            problem: Problem::new("too_long", "", "z"),
            tokens: 9,
        });
        assert!(tally.reconciles());
        assert_eq!(
            (tally.records_read, tally.tokens, tally.trained_tokens, tally.truncated),
            (3, 3, 2, 1)
        );
        assert_eq!(
            tally.rejected_by_kind.get("invalid_json"),
            Some(&1),
            "by the first problem"
        );
        assert_eq!(tally.dropped_by_reason.get("too_long"), Some(&1));
    }
}
