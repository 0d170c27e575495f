//! Merge: the packs of a partitioned run (`--num-shards N --shard-index I`, Slurm arrays, Ray
//! actors) joined into one pack, nothing re-tokenized:
//!
//! ```text
//! part-0/  manifest.json  shard-00000.arrow  rejects.jsonl  [validation/]
//! part-1/  ...                                        ─┐
//!                                                      ├─> out/ manifest.json  shard-00000.arrow
//!                                                      │        shard-00001.arrow ... rejects.jsonl
//! part-N-1/ ...                                       ─┘        [validation/]
//! ```
//!
//! Every part of one job, each once (checked on the typed manifests), in part order: shards are
//! hard-linked (copied across file systems), rejects joined, counts summed. A part read its
//! work units only, so it knew lines counted from each unit's start; the merge numbers every
//! unit's first line from the parts' line counts (the manifest's `units`) and the rejects'
//! lines with them. The merged
//! pack holds exactly the documents of an unpartitioned run (rows differ: each part packs its
//! own). Its manifest is written last, so an interrupted merge is never taken for a pack.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::manifest::{Manifest, MergedFrom, ValidationInfo, FORMAT_NAME, VALIDATION_DIR};
use super::output::{write_atomic, Counts, REJECTS_FILE};
use crate::error::{Error, Result};
use crate::read::units::{self, UnitInfo};
use crate::tokenize::hex_sha256;

/// What a merge did: "done" or "up to date", and the merged training pack's manifest.
pub struct Merged {
    pub status: &'static str,
    pub manifest: Manifest,
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let file = path.join("manifest.json");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::config(format!("{} is not an sftpack pack manifest: {e}", file.display())))
}

/// A finished part's manifest.
fn read_part(path: &Path) -> Result<Manifest> {
    if !path.join("manifest.json").is_file() {
        let hint = if path.join("progress.json").exists() {
            "the part is still running or was interrupted: run its preprocess command again"
        } else {
            "pass the `out` folders of the parts' preprocess runs"
        };
        return Err(Error::config(format!("{} is not a finished pack (no manifest.json)", path.display())).hint(hint));
    }
    let manifest = read_manifest(path)?;
    if manifest.format != FORMAT_NAME {
        return Err(Error::config(format!("{} is not an sftpack pack", path.display())));
    }
    if manifest.config.partition.is_none() {
        return Err(Error::config(format!("{} is a whole pack, not a part", path.display()))
            .hint("parts are made with `num_shards` and `shard_index` (sftpack preprocess --num-shards N --shard-index I)"));
    }
    Ok(manifest)
}

/// What every part of one job shares; anything else differing means another job's part.
fn differences(part: &Manifest, first: &Manifest) -> Vec<&'static str> {
    let mut differing = Vec::new();
    let spans = |m: &Manifest| {
        m.units
            .as_ref()
            .map(|u| u.iter().map(|u| (u.file, u.span)).collect::<Vec<_>>())
    };
    let checks: [(&'static str, bool); 9] = [
        (
            "format",
            part.format == first.format && part.format_version == first.format_version,
        ),
        ("sftpack_version", part.sftpack_version == first.sftpack_version),
        ("engine_build", part.engine_build == first.engine_build),
        ("inputs", part.inputs == first.inputs),
        ("tokenizer", part.tokenizer == first.tokenizer),
        ("template", part.template == first.template),
        ("max_length", part.max_length == first.max_length),
        ("units", spans(part) == spans(first)),
        ("config", {
            let (mut a, mut b) = (part.config.clone(), first.config.clone());
            a.partition = None;
            b.partition = None;
            a == b
        }),
    ];
    for (name, same) in checks {
        if !same {
            differing.push(name);
        }
    }
    differing
}

/// The parts are all N parts of one job, each once.
fn check_parts(dirs: &[PathBuf], manifests: &[Manifest]) -> Result<()> {
    let first = &manifests[0];
    for (dir, manifest) in dirs.iter().zip(manifests) {
        let differing = differences(manifest, first);
        if !differing.is_empty() {
            return Err(Error::config(format!(
                "{} was made with other {} than {}: they are not parts of one job",
                dir.display(),
                differing.join(", "),
                dirs[0].display()
            ))
            .hint("run every part with the same inputs, tokenizer, template and settings"));
        }
    }
    let count = first.config.partition.map_or(0, |p| p.count);
    let mut seen: BTreeMap<u64, &PathBuf> = BTreeMap::new();
    for (dir, manifest) in dirs.iter().zip(manifests) {
        let Some(partition) = manifest.config.partition else {
            continue;
        };
        if partition.count != count {
            return Err(Error::config(format!(
                "{} is part {} of {}, {} of {count}: the parts are of different partitionings",
                dir.display(),
                partition.index,
                partition.count,
                dirs[0].display()
            )));
        }
        if let Some(other) = seen.insert(partition.index, dir) {
            return Err(Error::config(format!(
                "{} and {} are both part {} of {count}",
                dir.display(),
                other.display(),
                partition.index
            )));
        }
    }
    let missing: Vec<u64> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(
            Error::config(format!("parts {missing:?} of {count} are missing")).hint(format!(
                "run sftpack preprocess --num-shards {count} --shard-index I for each, then merge all of them"
            )),
        );
    }
    Ok(())
}

fn link_or_copy(source: &Path, target: &Path) -> Result<()> {
    if std::fs::hard_link(source, target).is_err() {
        // another file system, or links not allowed
        std::fs::copy(source, target).map_err(|e| Error::io(source, e))?;
    }
    Ok(())
}

fn sum_counts(manifests: &[Manifest], max_length: Option<usize>) -> Counts {
    let mut total = Counts::default();
    for manifest in manifests {
        total.tally.add(&manifest.counts.tally);
        total.rows += manifest.counts.rows;
    }
    total.packing_efficiency = match max_length {
        Some(length) if total.rows > 0 => total.tally.tokens as f64 / (total.rows * length as u64) as f64,
        _ => 1.0,
    };
    total
}

/// The parts' work units, each with the line count of the part that read it, and numbered.
fn merged_units(manifests: &[Manifest]) -> Result<Option<Vec<UnitInfo>>> {
    let Some(mut merged) = manifests[0].units.clone() else {
        return Ok(None);
    };
    for manifest in manifests {
        for (unit, part_unit) in merged.iter_mut().zip(manifest.units.iter().flatten()) {
            unit.lines = unit.lines.or(part_unit.lines);
        }
    }
    units::number_lines(&mut merged);
    if let Some(place) = merged.iter().position(|u| u.first_line.is_none()) {
        return Err(Error::config(format!(
            "no part read work unit {place} of the inputs: the parts are incomplete or damaged"
        ))
        .hint("run the parts' preprocess commands again, then merge"));
    }
    Ok(Some(merged))
}

/// Copies a part's rejects, numbering the lines of records read in a unit within their file.
fn copy_rejects(part: &Path, joined: &mut impl Write, units: Option<&[UnitInfo]>, target: &Path) -> Result<()> {
    let text = std::fs::read_to_string(part).map_err(|e| Error::io(part, e))?;
    for line in text.lines() {
        let mut reject: serde_json::Map<String, Value> = serde_json::from_str(line)
            .map_err(|e| Error::config(format!("{}: a line is not JSON: {e}", part.display())))?;
        if let (Some(unit), Some(units)) = (reject.remove("unit").and_then(|u| u.as_u64()), units) {
            let first = units.get(unit as usize).and_then(|u| u.first_line).unwrap_or(1);
            let relative = reject.get("line").and_then(Value::as_u64).unwrap_or(1);
            reject.insert("line".into(), Value::from(first - 1 + relative));
        }
        writeln!(joined, "{}", Value::Object(reject)).map_err(|e| Error::io(target, e))?;
    }
    Ok(())
}

/// Joins one split (the training packs, or the validation packs) of every part into `out`.
fn merge_split(
    dirs: &[PathBuf],
    manifests: &[Manifest],
    out: &Path,
    key: &str,
    from: &[MergedFrom],
    units: Option<&[UnitInfo]>,
) -> Result<Manifest> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut shards = Vec::new();
    for (dir, manifest) in dirs.iter().zip(manifests) {
        for shard in &manifest.shards {
            let name = format!("shard-{:05}.arrow", shards.len());
            link_or_copy(&dir.join(&shard.file), &out.join(&name))?;
            let mut shard = shard.clone();
            shard.file = name;
            shards.push(shard);
        }
    }
    let rejects = out.join(REJECTS_FILE);
    let file = std::fs::File::create(&rejects).map_err(|e| Error::io(&rejects, e))?;
    let mut joined = std::io::BufWriter::new(file);
    for dir in dirs {
        let part = dir.join(REJECTS_FILE);
        if part.is_file() {
            copy_rejects(&part, &mut joined, units, &rejects)?;
        }
    }
    joined.flush().map_err(|e| Error::io(&rejects, e))?;
    let first = &manifests[0];
    let mut merged = first.clone();
    merged.key = key.to_string();
    merged.shards = shards;
    merged.config.partition = None;
    merged.counts = sum_counts(manifests, first.max_length);
    merged.merged_from = Some(from.to_vec());
    merged.units = units.map(<[UnitInfo]>::to_vec);
    let engines: Vec<_> = manifests.iter().filter_map(|m| m.tokenizer_engine.as_ref()).collect();
    if let Some(engine) = engines.first() {
        let mut total = (*engine).clone();
        total.texts_with_starts = engines.iter().map(|e| e.texts_with_starts).sum();
        total.starts_from_old_engine = engines.iter().map(|e| e.starts_from_old_engine).sum();
        merged.tokenizer_engine = Some(total);
    }
    Ok(merged)
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| Error::output(e.to_string()))?;
    write_atomic(&path.join("manifest.json"), &text)
}

/// Removes an earlier pack's files from `target`; refuses a folder holding anything else (a
/// mistyped `out` must not cost a user their files).
fn clear_pack_dir(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(target)
        .map_err(|e| Error::io(target, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    let is_pack_file = |path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ["manifest.json", REJECTS_FILE, VALIDATION_DIR, "progress.json"].contains(&name.as_str())
            || (name.starts_with("shard-") && name.ends_with(".arrow"))
            || name.ends_with(".tmp")
    };
    let mut others: Vec<String> = entries
        .iter()
        .filter(|p| !is_pack_file(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if !others.is_empty() {
        others.sort();
        others.truncate(5);
        return Err(Error::config(format!(
            "{} holds files that are not a pack's ({})",
            target.display(),
            others.join(", ")
        ))
        .hint("choose an empty or new `out` folder"));
    }
    for path in entries {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Joins the packs of a partitioned run (every part, each once) into one pack at `out`; a pack
/// already there from the same parts is "up to date", another one is an error unless
/// `overwrite`.
pub fn merge_parts(parts: &[PathBuf], out: &Path, overwrite: bool) -> Result<Merged> {
    if parts.is_empty() {
        return Err(Error::config("no parts to merge").hint("sftpack pack merge PART... --out DIR"));
    }
    let mut found: Vec<(PathBuf, Manifest)> = parts
        .iter()
        .map(|dir| Ok((dir.clone(), read_part(dir)?)))
        .collect::<Result<_>>()?;
    let (dirs, manifests): (Vec<PathBuf>, Vec<Manifest>) = found.iter().cloned().unzip();
    check_parts(&dirs, &manifests)?;
    found.sort_by_key(|(_, m)| m.config.partition.map_or(0, |p| p.index));
    let (dirs, manifests): (Vec<PathBuf>, Vec<Manifest>) = found.into_iter().unzip();
    let keys: Vec<&str> = manifests.iter().map(|m| m.key.as_str()).collect();
    let key = hex_sha256(serde_json::to_string(&("merge", &keys)).unwrap_or_default().as_bytes());
    if out.join("manifest.json").is_file() {
        match read_manifest(out) {
            Ok(existing) if existing.key == key => {
                return Ok(Merged {
                    status: "up to date",
                    manifest: existing,
                })
            }
            _ if !overwrite => {
                return Err(Error::config(format!("{} holds another pack", out.display()))
                    .hint("choose another `out`, or use `overwrite: true`"))
            }
            _ => {}
        }
    }
    clear_pack_dir(out)?;
    let from: Vec<MergedFrom> = dirs
        .iter()
        .zip(&manifests)
        .map(|(dir, m)| MergedFrom {
            path: dir.display().to_string(),
            key: m.key.clone(),
            partition: m.config.partition,
        })
        .collect();
    let units = merged_units(&manifests)?;
    let mut manifest = merge_split(&dirs, &manifests, out, &key, &from, units.as_deref())?;
    if let Some(validation) = &manifests[0].validation {
        let held_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.join(VALIDATION_DIR)).collect();
        let held: Vec<Manifest> = held_dirs.iter().map(|d| read_manifest(d)).collect::<Result<_>>()?;
        let merged_held = merge_split(
            &held_dirs,
            &held,
            &out.join(VALIDATION_DIR),
            &key,
            &from,
            units.as_deref(),
        )?;
        write_manifest(&out.join(VALIDATION_DIR), &merged_held)?;
        let counts = &merged_held.counts;
        super::split::check_outcome(counts.tally.records_read, manifest.counts.tally.records_read)?;
        manifest.validation = Some(ValidationInfo {
            records: manifests
                .iter()
                .filter_map(|m| m.validation.as_ref())
                .map(|v| v.records)
                .sum(),
            documents: counts.tally.packed,
            tokens: counts.tally.tokens,
            rows: counts.rows,
            ..validation.clone()
        });
    }
    write_manifest(out, &manifest)?; // last: the pack is complete
    Ok(Merged {
        status: "done",
        manifest,
    })
}
