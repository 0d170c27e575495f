//! A tokenizer folder: finding its tokenizer.json, reading tokenizer_config.json (special
//! tokens, the chat template, or chat_template.jinja/.json beside it), and rebuilding Llama
//! SentencePiece tokenizers the way current transformers loads them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::read::read_to_string;

pub(super) const LLAMA_CLASSES: [&str; 4] = [
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "CodeLlamaTokenizer",
    "CodeLlamaTokenizerFast",
];

/// transformers 5 rebuilds SentencePiece-style Llama tokenizers from their vocabulary: no
/// normalizer, and a Metaspace pre-tokenizer whose prepend scheme follows `legacy` and
/// `add_prefix_space`. Returns the rewritten tokenizer.json (`text`, whose outline is `json`), or
/// None when nothing changes.
pub(super) fn transformers_llama_rebuild(
    text: &str,
    json: &Value,
    config: &serde_json::Map<String, Value>,
) -> Option<Value> {
    let class = config.get("tokenizer_class").and_then(Value::as_str)?;
    if !LLAMA_CLASSES.contains(&class) {
        return None;
    }
    let sentencepiece_style = json
        .get("normalizer")
        .is_some_and(|n| n.to_string().contains("\"Prepend\""))
        || json.pointer("/pre_tokenizer/type").and_then(Value::as_str) == Some("Metaspace");
    if !sentencepiece_style {
        return None;
    }
    let legacy = config.get("legacy").and_then(Value::as_bool).unwrap_or(false);
    let add_prefix_space = config.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true);
    let scheme = match (add_prefix_space, legacy) {
        (false, _) => "never",
        (true, true) => "always",
        (true, false) => "first",
    };
    let mut rebuilt: Value = serde_json::from_str(text).ok()?;
    let map = rebuilt.as_object_mut()?;
    map.insert("normalizer".into(), Value::Null);
    map.insert(
        "pre_tokenizer".into(),
        serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": scheme, "split": false}),
    );
    Some(rebuilt)
}

pub(super) fn locate_tokenizer_json(dir: &Path) -> Option<PathBuf> {
    ["tokenizer.json", "tokenizer.json.gz"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

pub(super) fn missing_tokenizer_error(dir: &Path) -> Error {
    let spm = ["tokenizer.model"].iter().any(|n| dir.join(n).is_file())
        || std::fs::read_dir(dir).ok().is_some_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".model"))
        });
    let hint = if spm {
        format!(
            "this directory has a SentencePiece model only; convert it once with `sftpack convert-tokenizer {}`, which writes tokenizer.json beside it",
            dir.display()
        )
    } else {
        "point `tokenizer` at a Hugging Face tokenizer directory (with tokenizer.json) or at a tokenizer.json file"
            .to_string()
    };
    Error::tokenizer(format!("no tokenizer.json in {}", dir.display())).hint(hint)
}

/// A config token is a string or an AddedToken object `{"content": ...}`.
pub(super) fn token_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` may be a string or a list of named templates (the "default" one is used).
pub(super) fn template_from_config(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| items.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

pub(super) fn read_json_object(path: &Path) -> Result<serde_json::Map<String, Value>> {
    let text = read_to_string(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::tokenizer(format!("{} is not a JSON object", path.display()))),
        Err(e) => Err(Error::tokenizer(format!("{} is not valid JSON: {e}", path.display()))),
    }
}

/// The files beside tokenizer.json that the engine reads: special tokens, the tokenizer class,
/// `legacy`/`add_prefix_space`, and the chat template.
pub(super) const CONFIG_FILES: [&str; 3] = ["tokenizer_config.json", "chat_template.jinja", "chat_template.json"];

pub(super) fn load_chat_template(dir: &Path, config: &serde_json::Map<String, Value>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return read_to_string(&jinja).map(Some);
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let map = read_json_object(&json)?;
        return Ok(template_from_config(map.get("chat_template")));
    }
    Ok(template_from_config(config.get("chat_template")))
}

/// The special tokens a tokenizer's post-processor puts around a single text (what
/// transformers' `tokenizer(text)` adds: Llama's BOS, BERT's CLS/SEP), before and after it.
pub(super) fn added_around_text(json: &Value) -> (Vec<u32>, Vec<u32>) {
    let processor = &json["post_processor"];
    let processors: Vec<&Value> = match processor["type"].as_str() {
        Some("Sequence") => processor["processors"]
            .as_array()
            .map(|p| p.iter().collect())
            .unwrap_or_default(),
        _ => vec![processor],
    };
    let id_of = |pair: &Value| pair.get(1).and_then(Value::as_u64).map(|id| id as u32);
    for processor in processors {
        match processor["type"].as_str() {
            Some("TemplateProcessing") => return template_specials(processor),
            Some("BertProcessing" | "RobertaProcessing") => {
                let cls = id_of(&processor["cls"]).into_iter().collect();
                let sep = id_of(&processor["sep"]).into_iter().collect();
                return (cls, sep);
            }
            _ => {}
        }
    }
    (Vec::new(), Vec::new())
}

/// The ids of a TemplateProcessing's `single` template before and after the sequence.
fn template_specials(processor: &Value) -> (Vec<u32>, Vec<u32>) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut seen_sequence = false;
    for piece in processor["single"].as_array().into_iter().flatten() {
        if piece.get("Sequence").is_some() {
            seen_sequence = true;
            continue;
        }
        let Some(name) = piece["SpecialToken"]["id"].as_str() else {
            continue;
        };
        let ids = processor["special_tokens"][name]["ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_u64().map(|id| id as u32));
        if seen_sequence {
            after.extend(ids);
        } else {
            before.extend(ids);
        }
    }
    (before, after)
}
