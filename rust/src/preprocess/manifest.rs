//! The manifest and the key: what a pack was made from, with which settings, and the hash of all
//! of it that decides whether a re-run has anything to do.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::output::Counts;
use super::PreprocessConfig;
use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::shard::ShardInfo;
use crate::tokenize::hex_sha256;

pub const FORMAT_NAME: &str = "sftpack-pack";
pub const FORMAT_VERSION: u32 = 1;
pub(super) const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// A hash of the engine's sources, built-in templates and locked dependencies (build.rs).
pub(super) const ENGINE_BUILD: &str = env!("SFTPACK_ENGINE_BUILD");
/// The validation split's folder inside a pack.
pub const VALIDATION_DIR: &str = "validation";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputInfo {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

pub(super) fn hash_file(path: &Path) -> Result<InputInfo> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let digest = hasher.finalize();
    Ok(InputInfo {
        path: path.display().to_string(),
        bytes,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// The settings that shape the output (threads and paths do not).
pub(super) fn output_settings(config: &PreprocessConfig) -> Value {
    let mut settings = json!({
        "format": config.job.format,
        "encode": config.job.encode,
        "pack": config.pack,
        "seed": config.seed,
        "window": config.window,
        "shard_bytes": config.shard_bytes,
    });
    if let Some(size) = config.validation {
        settings["validation"] = json!(size);
    }
    if let Some(map_fn) = &config.job.map_fn {
        settings["map_fn"] = json!(map_fn);
    }
    settings
}

/// What every manifest of a run shares: the key and what it was computed from.
pub(super) struct Provenance {
    pub key: String,
    pub inputs: Vec<InputInfo>,
    pub tokenizer: Value,
    pub template: Value,
    pub settings: Value,
}

impl Provenance {
    pub(super) fn new(config: &PreprocessConfig, encoder: &Encoder, inputs: Vec<InputInfo>) -> Self {
        let settings = output_settings(config);
        let tokenizer_files: serde_json::Map<String, Value> = encoder
            .tokenizer
            .files
            .iter()
            .map(|(name, sha)| (name.clone(), json!(sha)))
            .collect();
        // Everything that can change a byte of the output: the input bytes, every tokenizer
        // file the engine read, the template, the settings (template kwargs, lengths, seed,
        // split), and the engine build.
        let key_material = json!({
            "engine": ENGINE_VERSION,
            "engine_build": ENGINE_BUILD,
            "inputs": inputs.iter().map(|i| &i.sha256).collect::<Vec<_>>(),
            "tokenizer_files": tokenizer_files,
            "template": encoder.template.sha256(),
            "settings": settings,
        });
        Provenance {
            key: hex_sha256(key_material.to_string().as_bytes()),
            inputs,
            tokenizer: json!({
                "path": encoder.tokenizer.path.display().to_string(),
                "sha256": encoder.tokenizer.sha256,
                "files": tokenizer_files,
                "vocab_size": encoder.tokenizer.vocab_size(),
                "special_tokens": encoder.tokenizer.special,
            }),
            template: json!({
                "name": encoder.template.name(),
                "source": encoder.template.source(),
                "sha256": encoder.template.sha256(),
            }),
            settings,
        }
    }

    /// One pack's manifest. `split` is "train" or "validation" when the run holds out a split.
    pub(super) fn manifest(
        &self,
        max_length: Option<usize>,
        counts: &Counts,
        shards: &[ShardInfo],
        split: Option<&str>,
    ) -> Value {
        let mut manifest = json!({
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sftpack_version": ENGINE_VERSION,
            "engine_build": ENGINE_BUILD,
            "key": self.key,
            "inputs": self.inputs,
            "tokenizer": self.tokenizer,
            "template": self.template,
            "config": self.settings,
            "max_length": max_length,
            "counts": counts,
            "shards": shards,
        });
        if let Some(split) = split {
            manifest["split"] = json!(split);
        }
        manifest
    }
}
