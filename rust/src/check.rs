//! Check: run every record of a dataset through schema, template and tokenizer, and report
//! problems by kind (with the first examples and their file:line), token length percentiles of
//! every valid record and the trained-token share. Nothing is sampled: every record is looked at.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::encode::{Encoded, Encoder, Outcome};
use crate::error::{Problem, Result};
use crate::map::{map_records, RecordMapper};
use crate::pipeline::{
    build_encoder, detect_format, forced_format, open_encoder, process, stream, JobConfig, Positioned, Source,
};
use crate::read::{self, RawRecord};
use crate::schema::{Conversation, Format};
use crate::tally::Tally;

/// Where a record lives and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub file: String,
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(flatten)]
    pub problem: Problem,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KindReport {
    pub count: u64,
    pub examples: Vec<Example>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub format: Option<Format>,
    pub records: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LengthStats {
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub mean: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub files: Vec<FileReport>,
    pub records: u64,
    pub encoded: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub truncated: u64,
    /// Invalid records, by problem kind (one record may have several problems).
    pub problems: BTreeMap<String, KindReport>,
    /// Valid records that carry nothing to train on or do not fit, by reason.
    pub drops: BTreeMap<String, KindReport>,
    /// Tokens of the usable records, as they would be packed (after truncation).
    pub tokens: u64,
    pub trained_tokens: u64,
    /// Lengths of every valid record, usable or dropped, before truncation: what the data
    /// asks of max_length (a percentile of only the records that fit would hide the rest).
    pub lengths: LengthStats,
    pub template: String,
    pub max_length: Option<usize>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.rejected == 0 && self.dropped == 0 && self.records > 0
    }
}

/// Conversation lengths as a count per distinct length: exact percentiles in memory that grows
/// with the number of distinct lengths (at most the longest conversation's token count), not
/// with the number of records.
#[derive(Debug, Default)]
struct LengthHistogram {
    counts: BTreeMap<usize, u64>,
    records: u64,
    tokens: u64,
}

impl LengthHistogram {
    fn add(&mut self, length: usize) {
        *self.counts.entry(length).or_default() += 1;
        self.records += 1;
        self.tokens += length as u64;
    }

    /// The smallest length with at least `q` of the records at or below it (nearest rank).
    fn percentile(&self, q: f64) -> usize {
        let rank = ((q * self.records as f64).ceil() as u64).clamp(1, self.records.max(1));
        let mut seen = 0;
        for (&length, &count) in &self.counts {
            seen += count;
            if seen >= rank {
                return length;
            }
        }
        0
    }

    fn stats(&self) -> LengthStats {
        LengthStats {
            p50: self.percentile(0.5),
            p90: self.percentile(0.9),
            p99: self.percentile(0.99),
            max: self.counts.keys().next_back().copied().unwrap_or(0),
            mean: if self.records == 0 {
                0.0
            } else {
                self.tokens as f64 / self.records as f64
            },
        }
    }
}

fn note(map: &mut BTreeMap<String, KindReport>, keep: usize, file: &str, raw: &RawRecord, problem: Problem) {
    let entry = map.entry(problem.kind.to_string()).or_default();
    entry.count += 1;
    if entry.examples.len() < keep {
        entry.examples.push(Example {
            file: file.to_string(),
            line: raw.line,
            index: raw.index,
            problem,
        });
    }
}

/// Checks every record of the job's inputs (through `mapper` first, when the job has one).
pub fn check(config: &JobConfig, mapper: Option<&dyn RecordMapper>) -> Result<CheckReport> {
    let files = read::expand_inputs(&config.inputs, crate::pipeline::reads_raw_text(config))?;
    let encoder = open_encoder(config)?;
    let forced = forced_format(config)?;
    let mut report = CheckReport {
        template: encoder.template.name().to_string(),
        max_length: config.encode.max_length,
        files: files
            .iter()
            .map(|p| FileReport {
                path: p.display().to_string(),
                format: None,
                records: 0,
            })
            .collect(),
        ..CheckReport::default()
    };
    let mut lengths = LengthHistogram::default();
    let mut tally = Tally::default();
    let keep = config.examples_per_kind;
    let mut on_record = |format: Option<Format>, record: Positioned, outcome: Outcome| {
        let raw = record.raw;
        let file_report = &mut report.files[raw.file as usize];
        file_report.format = format;
        file_report.records += 1;
        let file = file_report.path.clone();
        tally.count(&outcome);
        match outcome {
            Outcome::Encoded(e) => lengths.add(e.full_length()),
            // every problem of a record is reported (the tally counts records by their first)
            Outcome::Rejected(problems) => {
                for p in problems {
                    note(&mut report.problems, keep, &file, &raw, p);
                }
            }
            Outcome::Dropped { problem, tokens } => {
                lengths.add(tokens);
                note(&mut report.drops, keep, &file, &raw, problem);
            }
        }
        Ok(())
    };
    let units = Source::whole_files(&files);
    let source = Source {
        units: &units,
        forced,
        encoder: &encoder,
        mapper,
        threads: config.threads,
        reports: None,
    };
    stream(&source, 0, &mut on_record, &mut |_| true)?;
    report.records = tally.records_read;
    report.encoded = tally.packed;
    report.rejected = tally.rejected;
    report.dropped = tally.dropped;
    report.truncated = tally.truncated;
    report.tokens = tally.tokens;
    report.trained_tokens = tally.trained_tokens;
    report.lengths = lengths.stats();
    Ok(report)
}

/// One record as `sftpack inspect` shows it: runs of tokens with the same mask, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub file: String,
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The record's length (a dropped one's too: it is valid, only unusable); 0 for a rejected one.
    pub tokens: usize,
    pub trained_tokens: usize,
    /// `(text, trained)` runs in order.
    pub runs: Vec<(String, bool)>,
    /// Per role ("system", "user", "assistant", "tool", "template"): `[tokens, trained tokens]`.
    pub roles: BTreeMap<&'static str, [usize; 2]>,
    /// The conversation as sftpack read it, in OpenAI `messages` form whatever the file's format
    /// (what `sftpack template check` compares against the tokenizer's own template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

fn runs(encoder: &Encoder, ids: &[u32], mask: &[u8]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=ids.len() {
        if i == ids.len() || mask[i] != mask[start] {
            out.push((encoder.tokenizer.decode(&ids[start..i]), mask[start] == 1));
            start = i;
        }
    }
    out
}

/// The record's conversation, when it parses (a record that does not has problems instead).
fn conversation_of(raw: &RawRecord, format: Option<Format>) -> Option<Conversation> {
    let record = raw.object().ok()?;
    crate::schema::record_conversation(&record, format).ok()
}

/// Tokens and trained tokens per role; empty when roles cannot be told apart.
fn role_counts(
    encoder: &Encoder,
    conversation: &Conversation,
    encoded: &Encoded,
) -> BTreeMap<&'static str, [usize; 2]> {
    let roles = encoder.token_roles(conversation).unwrap_or_default();
    let mut counts: BTreeMap<&'static str, [usize; 2]> = BTreeMap::new();
    if roles.len() < encoded.ids.len() {
        return counts;
    }
    for (role, &trained) in roles.iter().zip(&encoded.mask) {
        let entry = counts.entry(role).or_default();
        entry[0] += 1;
        entry[1] += usize::from(trained);
    }
    counts
}

/// The first `n` records of the inputs, encoded (or with their problems).
pub fn samples(config: &JobConfig, n: usize, mapper: Option<&dyn RecordMapper>) -> Result<Vec<Sample>> {
    let files = read::expand_inputs(&config.inputs, crate::pipeline::reads_raw_text(config))?;
    let encoder = build_encoder(config)?;
    let forced = forced_format(config)?;
    let mut out = Vec::new();
    for (file_index, path) in files.iter().enumerate() {
        let mut format = forced;
        for raw in read::records(file_index as u32, path)? {
            if out.len() >= n {
                return Ok(out);
            }
            let mut raw = raw?;
            if let Some(mapper) = mapper {
                map_records(mapper, std::slice::from_mut(&mut raw))?;
            }
            if format.is_none() {
                format = detect_format(std::slice::from_ref(&raw));
            }
            let mut sample = Sample {
                file: path.display().to_string(),
                line: raw.line,
                index: raw.index,
                tokens: 0,
                trained_tokens: 0,
                runs: Vec::new(),
                roles: BTreeMap::new(),
                record: None,
                problems: Vec::new(),
            };
            let conversation = conversation_of(&raw, format);
            sample.record = conversation.as_ref().map(Conversation::to_openai);
            match process(&raw, format, &encoder) {
                Outcome::Encoded(e) => {
                    sample.tokens = e.ids.len();
                    sample.trained_tokens = e.trained_tokens();
                    sample.runs = runs(&encoder, &e.ids, &e.mask);
                    if let Some(conversation) = &conversation {
                        sample.roles = role_counts(&encoder, conversation, &e);
                    }
                }
                Outcome::Rejected(problems) => sample.problems = problems,
                Outcome::Dropped { problem, tokens } => {
                    sample.tokens = tokens;
                    sample.problems = vec![problem];
                }
            }
            out.push(sample);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::SplitMix64;

    fn sorted_percentile(sorted: &[usize], q: f64) -> usize {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn histogram_percentiles_equal_those_of_the_sorted_lengths() {
        let mut rng = SplitMix64::new(3);
        for n in [1, 2, 10, 999, 20_000] {
            let lengths: Vec<usize> = (0..n).map(|_| 1 + (rng.next_u64() % 3000) as usize).collect();
            let mut histogram = LengthHistogram::default();
            lengths.iter().for_each(|&l| histogram.add(l));
            let mut sorted = lengths.clone();
            sorted.sort_unstable();
            for q in [0.5, 0.9, 0.99, 1.0] {
                assert_eq!(histogram.percentile(q), sorted_percentile(&sorted, q), "n={n} q={q}");
            }
            assert_eq!(histogram.stats().max, sorted[n - 1]);
            assert!(histogram.counts.len() <= 3000, "one counter per distinct length");
        }
        assert_eq!(LengthHistogram::default().stats().p50, 0);
    }
}
