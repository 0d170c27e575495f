//! The manifest and the key: what a pack was made from, with which settings, and the hash of all
//! of it that decides whether a re-run has anything to do. `Manifest` is the `manifest.json` of
//! docs/pack-format.md, field for field.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::output::Counts;
use super::split::ValidationSize;
use super::PreprocessConfig;
use crate::encode::{EncodeOptions, Encoder};
use crate::error::{Error, Result};
use crate::map::MapFnIdentity;
use crate::pipeline::Partition;
use crate::read::units::UnitInfo;
use crate::shard::ShardInfo;
use crate::tokenize::{hex_sha256, EngineReport, SpecialTokens};
use crate::ENGINE_BUILD;

pub const FORMAT_NAME: &str = "sftpack-pack";
/// 2: a partitioned or merged pack's sources name work units (`units`), not files.
pub const FORMAT_VERSION: u32 = 2;
pub(super) const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The validation split's folder inside a pack.
pub const VALIDATION_DIR: &str = "validation";

/// An input as the pack knows it. The key holds what describes it without reading it: a local
/// file's size and modification time, an object's ETag and size. `sha256` is the hash of the
/// bytes the run read, computed as it read them (JSON inputs, read whole); a re-run whose inputs
/// only got new times checks it before calling the pack out of date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub bytes: u64,
    /// Last modified, in nanoseconds since the Unix epoch (local files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl InputInfo {
    /// What the pack key holds of this input.
    fn fingerprint(&self) -> String {
        match &self.etag {
            Some(etag) => format!("etag:{etag}:{}", self.bytes),
            None => format!("file:{}:{}", self.bytes, self.modified_ns.unwrap_or(0)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    pub path: String,
    /// sha256 of tokenizer.json (training checks a model's tokenizer against it).
    pub sha256: String,
    /// sha256 of every tokenizer file the engine read, by file name.
    pub files: BTreeMap<String, String>,
    pub vocab_size: usize,
    pub special_tokens: SpecialTokens,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    /// The full definition: Jinja text, or an XTuner template as JSON.
    pub source: String,
    pub sha256: String,
}

/// The settings that shape the output (threads and paths do not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    pub format: Option<String>,
    pub encode: EncodeOptions,
    pub pack: bool,
    pub seed: u64,
    pub window: usize,
    pub shard_bytes: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_fn: Option<MapFnIdentity>,
    /// The part of the records this pack holds, in a partitioned run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
}

impl OutputSettings {
    pub fn of(config: &PreprocessConfig) -> Self {
        OutputSettings {
            format: config.job.format.clone(),
            encode: config.job.encode.clone(),
            pack: config.pack,
            seed: config.seed,
            window: config.window,
            shard_bytes: config.shard_bytes,
            validation: config.validation,
            map_fn: config.job.map_fn.clone(),
            partition: config.partition,
        }
    }
}

/// The training pack's note of its validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationInfo {
    pub path: String,
    pub size: ValidationSize,
    /// Records held out, whether packed or rejected.
    pub records: u64,
    pub documents: u64,
    pub tokens: u64,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub sftpack_version: String,
    pub engine_build: String,
    pub key: String,
    pub inputs: Vec<InputInfo>,
    pub tokenizer: TokenizerInfo,
    pub template: TemplateInfo,
    pub config: OutputSettings,
    pub max_length: Option<usize>,
    pub counts: Counts,
    pub shards: Vec<ShardInfo>,
    /// "train" or "validation" when the run held out a split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationInfo>,
    /// Which tokenizer engine the run used and how many records needed the old one (not part
    /// of the key: the output is the same with either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_engine: Option<EngineReport>,
    /// The parts a merged pack was joined from (see [`super::merge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<MergedFrom>>,
    /// The work units of a partitioned run, when this pack is a part or a merge of parts: a
    /// document's `source_file` then names a unit, and its `source_line` counts from the unit's
    /// `first_line` (see [`crate::read::units`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<UnitInfo>>,
}

/// One part of a merged pack: where it was, its key and which part it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedFrom {
    pub path: String,
    pub key: String,
    pub partition: Option<Partition>,
}

/// An input described from its metadata (nothing is read).
pub(super) fn describe_input(path: &Path) -> Result<InputInfo> {
    if crate::read::is_remote(path) {
        let url = path.display().to_string();
        let (bytes, etag) = crate::read::Object::new(&url)?.head()?;
        return Ok(InputInfo {
            path: url,
            bytes,
            modified_ns: None,
            sha256: None,
            etag,
        });
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64);
    Ok(InputInfo {
        path: path.display().to_string(),
        bytes: meta.len(),
        modified_ns: modified,
        sha256: None,
        etag: None,
    })
}

/// Whether the inputs a pack recorded hold the bytes the current ones do: same paths and sizes,
/// and each recorded sha256 equal to the current file's (read here: the one case a run hashes a
/// file apart from reading it, when only its time changed).
pub(super) fn same_bytes(recorded: &[InputInfo], current: &[InputInfo]) -> Result<bool> {
    if recorded.len() != current.len() {
        return Ok(false);
    }
    for (old, new) in recorded.iter().zip(current) {
        if old.path != new.path || old.bytes != new.bytes || old.etag != new.etag {
            return Ok(false);
        }
        if old.fingerprint() == new.fingerprint() {
            continue;
        }
        match &old.sha256 {
            Some(sha256) if *sha256 == hash_file(Path::new(&new.path))? => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

fn hash_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        crate::profile::read_input(n);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What every manifest of a run shares: the key and what it was computed from.
pub(super) struct Provenance {
    pub key: String,
    pub inputs: Vec<InputInfo>,
    pub tokenizer: TokenizerInfo,
    pub template: TemplateInfo,
    pub settings: OutputSettings,
    pub units: Option<Vec<UnitInfo>>,
}

/// Everything that can change a byte of the output: the input bytes, every tokenizer file the
/// engine read, the template, the settings (template kwargs, lengths, seed, split, map function)
/// and the engine build.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    engine: &'a str,
    engine_build: &'a str,
    inputs: Vec<String>,
    tokenizer_files: &'a BTreeMap<String, String>,
    template: &'a str,
    settings: &'a OutputSettings,
}

impl Provenance {
    pub(super) fn new(config: &PreprocessConfig, encoder: &Encoder, inputs: Vec<InputInfo>) -> Self {
        let tokenizer = TokenizerInfo {
            path: encoder.tokenizer.path.display().to_string(),
            sha256: encoder.tokenizer.sha256.clone(),
            files: encoder.tokenizer.files.iter().cloned().collect(),
            vocab_size: encoder.tokenizer.vocab_size(),
            special_tokens: encoder.tokenizer.special.clone(),
        };
        let template = TemplateInfo {
            name: encoder.template.name().to_string(),
            source: encoder.template.source(),
            sha256: encoder.template.sha256(),
        };
        let settings = OutputSettings::of(config);
        let mut provenance = Provenance {
            key: String::new(),
            inputs,
            tokenizer,
            template,
            settings,
            units: None,
        };
        provenance.key = provenance.key_with(&provenance.inputs);
        provenance
    }

    /// The key of this run's settings, tokenizer and template with `inputs`.
    pub(super) fn key_with(&self, inputs: &[InputInfo]) -> String {
        let material = KeyMaterial {
            engine: ENGINE_VERSION,
            engine_build: ENGINE_BUILD,
            inputs: inputs.iter().map(InputInfo::fingerprint).collect(),
            tokenizer_files: &self.tokenizer.files,
            template: &self.template.sha256,
            settings: &self.settings,
        };
        hex_sha256(serde_json::to_string(&material).unwrap_or_default().as_bytes())
    }

    /// Records the sha256 of each input the run read whole.
    pub(super) fn set_digests(&mut self, digests: Vec<Option<String>>) {
        for (input, digest) in self.inputs.iter_mut().zip(digests) {
            input.sha256 = digest;
        }
    }

    /// One pack's manifest. `split` is "train" or "validation" when the run holds out a split.
    pub(super) fn manifest(
        &self,
        max_length: Option<usize>,
        counts: Counts,
        shards: Vec<ShardInfo>,
        split: Option<&str>,
    ) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            sftpack_version: ENGINE_VERSION.into(),
            engine_build: ENGINE_BUILD.into(),
            key: self.key.clone(),
            inputs: self.inputs.clone(),
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            config: self.settings.clone(),
            max_length,
            counts,
            shards,
            split: split.map(str::to_string),
            validation: None,
            tokenizer_engine: None,
            merged_from: None,
            units: self.units.clone(),
        }
    }
}
