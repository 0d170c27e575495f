//! Template: how a conversation becomes text. Three sources:
//! - the tokenizer's own Jinja chat template (the default);
//! - a built-in XTuner prompt template by name (`--template qwen_chat`), see [`builtin`];
//! - a user's Jinja file (`--template my_template.jinja`).

pub mod builtin;
pub mod jinja;

use std::path::Path;

use crate::error::{Error, Result};
use crate::tokenize::{hex_sha256, TokenizerBundle};

pub use builtin::BuiltinTemplate;
pub use jinja::JinjaTemplate;

/// The template setting that names the tokenizer's own chat template (also the default).
pub const TOKENIZER_TEMPLATE: &str = "tokenizer";

pub enum ChatTemplate {
    Jinja {
        name: String,
        template: JinjaTemplate,
    },
    Builtin(BuiltinTemplate),
    /// No chat template: a raw-text job's documents are tokenized as they are.
    RawText,
}

/// How a raw-text pack's manifest names its (absent) template.
pub const RAW_TEXT_TEMPLATE: &str = "raw_text";

impl ChatTemplate {
    /// Picks the template from `spec`: None or "tokenizer" = the tokenizer's own, a built-in
    /// name, or a path to a Jinja file.
    pub fn resolve(spec: Option<&str>, tokenizer: &TokenizerBundle) -> Result<Self> {
        match spec {
            None | Some(TOKENIZER_TEMPLATE) => {
                let source = tokenizer.chat_template.as_deref().ok_or_else(|| {
                    Error::template(format!(
                        "the tokenizer at {} has no chat template",
                        tokenizer.path.display()
                    ))
                    .hint(format!(
                        "set `template` to a built-in name (one of: {}) or a .jinja file",
                        builtin::names().join(", ")
                    ))
                })?;
                Ok(ChatTemplate::Jinja {
                    name: TOKENIZER_TEMPLATE.into(),
                    template: JinjaTemplate::new(source, &tokenizer.special)?,
                })
            }
            Some(name) => {
                if let Some(t) = builtin::get(name) {
                    return Ok(ChatTemplate::Builtin(t));
                }
                let path = Path::new(name);
                if path.is_file() {
                    let source = crate::read::read_to_string(path)?;
                    return Ok(ChatTemplate::Jinja {
                        name: name.into(),
                        template: JinjaTemplate::new(&source, &tokenizer.special)?,
                    });
                }
                Err(Error::template(format!(
                    "unknown template \"{name}\": it is neither a built-in template nor a file"
                ))
                .hint(format!(
                    "built-in templates are {}; `sftpack templates list` shows them",
                    builtin::names().join(", ")
                )))
            }
        }
    }

    /// A template as a pack's manifest records it, by name and full source: an XTuner template
    /// as its JSON definition, any other as Jinja text. Chat and samples rebuild the training
    /// template this way, whatever files or built-ins exist where they run.
    pub fn from_record(name: &str, source: &str, tokenizer: &TokenizerBundle) -> Result<Self> {
        if name == RAW_TEXT_TEMPLATE && source.is_empty() {
            return Ok(ChatTemplate::RawText);
        }
        if let Ok(mut builtin) = serde_json::from_str::<BuiltinTemplate>(source) {
            builtin.name = name.to_string();
            return Ok(ChatTemplate::Builtin(builtin));
        }
        Ok(ChatTemplate::Jinja {
            name: name.into(),
            template: JinjaTemplate::new(source, &tokenizer.special)?,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            ChatTemplate::Jinja { name, .. } => name,
            ChatTemplate::Builtin(t) => &t.name,
            ChatTemplate::RawText => RAW_TEXT_TEMPLATE,
        }
    }

    /// The template's full definition, as recorded in manifests.
    pub fn source(&self) -> String {
        match self {
            ChatTemplate::Jinja { template, .. } => template.source.clone(),
            ChatTemplate::Builtin(t) => serde_json::to_string(t).unwrap_or_default(),
            ChatTemplate::RawText => String::new(),
        }
    }

    pub fn sha256(&self) -> String {
        hex_sha256(self.source().as_bytes())
    }
}
