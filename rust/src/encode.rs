//! Encode: one canonical conversation → token ids and a loss mask, through the chosen template.
//!
//! Two tokenization modes follow from the template:
//! - Jinja templates render the whole conversation once and tokenize it once; ids equal
//!   transformers' `apply_chat_template(messages, tokenize=True)`; the mask comes from
//!   character spans (see [`crate::mask`]).
//! - XTuner templates encode each segment separately, exactly as XTuner's `encode_fn`, so ids
//!   and labels equal an XTuner run's.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Problem, Result};
use crate::mask::{message_regions, render_jinja, token_mask, Rendered, TemplateTraits};
use crate::profile::{self, Stage};
use crate::schema::{Conversation, Role};
use crate::template::builtin::Segments;
use crate::template::{BuiltinTemplate, ChatTemplate};
use crate::tokenize::{Flavor, TokenizerBundle};

/// The longest conversation, in tokens, where a job's settings give none: preprocess's row length,
/// and what check and inspect count as too long.
pub const DEFAULT_MAX_LENGTH: usize = 4096;

/// What to do with a conversation longer than `max_length` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlong {
    /// Drop the record and count it.
    #[default]
    Drop,
    /// Keep the first `max_length` tokens.
    Truncate,
    /// Stop the job.
    Error,
}

impl Overlong {
    pub const ALL: [Overlong; 3] = [Overlong::Drop, Overlong::Truncate, Overlong::Error];
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeOptions {
    /// None: no limit (a job's settings always give one; an `Encoder` of the Python API has none).
    #[serde(default = "default_max_length")]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub overlong: Overlong,
    /// Extra variables for Jinja templates (e.g. `{"enable_thinking": false}`).
    #[serde(default)]
    pub template_kwargs: Map<String, Value>,
}

fn default_max_length() -> Option<usize> {
    Some(DEFAULT_MAX_LENGTH)
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            max_length: default_max_length(),
            overlong: Overlong::default(),
            template_kwargs: Map::new(),
        }
    }
}

/// A conversation ready to pack.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// 1 where the token is trained.
    pub mask: Vec<u8>,
    /// The record's length in tokens before `overlong: truncate` cut it to max_length.
    pub truncated_from: Option<usize>,
    /// A raw-text document longer than this is packed as consecutive chunks of this many
    /// tokens (the last shorter); the mask leaves each chunk's first token untrained.
    pub chunk_length: Option<usize>,
}

impl Encoded {
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m == 1).count()
    }

    /// The record's length in tokens as rendered, before any truncation.
    pub fn full_length(&self) -> usize {
        self.truncated_from.unwrap_or(self.ids.len())
    }
}

/// Why a valid record produced nothing to train on (counted, never silent).
pub const DROP_NO_TRAINED_TOKENS: &str = "no_trained_tokens";
pub const DROP_TOO_LONG: &str = "too_long";

/// The problem of a conversation that `--overlong error` refuses, if `outcome` is one.
pub fn overlong_stop<'a>(options: &EncodeOptions, outcome: &'a Outcome) -> Option<&'a Problem> {
    match outcome {
        Outcome::Dropped { problem, .. } if problem.kind == DROP_TOO_LONG && options.overlong == Overlong::Error => {
            Some(problem)
        }
        _ => None,
    }
}

/// A record halfway through [`Encoder::encode`]: see [`Encoder::prepare`].
#[derive(Debug)]
pub enum Prepared {
    /// Rendered by a Jinja template, with its trained spans.
    Rendered(Rendered),
    /// For an XTuner template, which tokenizes segment by segment.
    Conversation(Conversation),
    /// A raw-text document.
    Text(String),
}

#[derive(Debug)]
pub enum Outcome {
    Encoded(Encoded),
    /// The record is invalid for this template/tokenizer.
    Rejected(Vec<Problem>),
    /// The record is valid but unusable (too long, nothing trained); `tokens` is its length.
    Dropped {
        problem: Problem,
        tokens: usize,
    },
}

pub struct Encoder {
    pub tokenizer: TokenizerBundle,
    pub template: ChatTemplate,
    pub options: EncodeOptions,
    pub(crate) traits: Option<TemplateTraits>,
    /// The BOS and EOS ids XTuner's encoder adds around turns.
    pub(crate) bos: Vec<u32>,
    pub(crate) eos: Vec<u32>,
}

impl Encoder {
    pub fn new(tokenizer: TokenizerBundle, template: ChatTemplate, options: EncodeOptions) -> Result<Self> {
        let traits = match &template {
            ChatTemplate::Jinja { template, .. } => Some(TemplateTraits::detect(template, &tokenizer)),
            ChatTemplate::Builtin(_) | ChatTemplate::RawText => None,
        };
        let (bos, eos) = xtuner_bos_eos(&tokenizer);
        Ok(Encoder {
            tokenizer,
            template,
            options,
            traits,
            bos,
            eos,
        })
    }

    /// Renders and tokenizes without applying the length policy.
    pub fn encode_full(&self, conversation: &Conversation) -> std::result::Result<Encoded, Vec<Problem>> {
        match &self.template {
            ChatTemplate::Jinja { .. } => self.tokenize_rendered(&self.render(conversation)?),
            ChatTemplate::Builtin(t) => {
                profile::time(Stage::Tokenize, || self.encode_xtuner(t, conversation)).map_err(|p| vec![p])
            }
            ChatTemplate::RawText => Err(vec![no_chat_template()]),
        }
    }

    /// Encodes and applies the length policy and the zero-trained-tokens rule.
    pub fn encode(&self, conversation: &Conversation) -> Outcome {
        self.apply_policy(self.encode_full(conversation))
    }

    /// The half of [`Encoder::encode`] that needs no tokenizer engine: a Jinja conversation
    /// rendered with its trained spans. A job prepares records while the engine still builds.
    pub fn prepare(&self, conversation: Conversation) -> std::result::Result<Prepared, Vec<Problem>> {
        match &self.template {
            ChatTemplate::Jinja { .. } => Ok(Prepared::Rendered(self.render(&conversation)?)),
            ChatTemplate::Builtin(_) => Ok(Prepared::Conversation(conversation)),
            ChatTemplate::RawText => Err(vec![no_chat_template()]),
        }
    }

    /// The other half: tokenizes a prepared record and applies the length policy.
    pub fn finish(&self, prepared: Prepared) -> Outcome {
        self.apply_policy(match prepared {
            Prepared::Rendered(rendered) => self.tokenize_rendered(&rendered),
            Prepared::Conversation(conversation) => self.encode_full(&conversation),
            Prepared::Text(text) => self.encode_text(&text),
        })
    }

    /// A raw document as transformers' `tokenizer(text)` gives it (special tokens its
    /// post-processor adds around a text, BOS where there is one), then the end-of-text token
    /// (the tokenizer's EOS) unless it ends so already; every token trained. Longer than
    /// `max_length`, it is cut into chunks when packed, never dropped or truncated.
    pub fn encode_text(&self, text: &str) -> std::result::Result<Encoded, Vec<Problem>> {
        let body = profile::time(Stage::Tokenize, || {
            self.tokenizer.encode(Flavor::Transformers, text, &[], false)
        })
        .map_err(|p| vec![p])?;
        let (before, after) = &self.tokenizer.added_around_text;
        let mut ids = Vec::with_capacity(before.len() + body.ids.len() + after.len() + 1);
        ids.extend_from_slice(before);
        ids.extend(body.ids);
        ids.extend_from_slice(after);
        if let Some(&eos) = self.eos.first() {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
        let chunk = self.options.max_length.filter(|&m| m > 0);
        let mask = (0..ids.len())
            .map(|i| u8::from(chunk.map_or(i, |m| i % m) != 0))
            .collect();
        Ok(Encoded {
            ids,
            mask,
            truncated_from: None,
            chunk_length: chunk,
        })
    }

    fn render(&self, conversation: &Conversation) -> std::result::Result<Rendered, Vec<Problem>> {
        let (ChatTemplate::Jinja { template, .. }, Some(traits)) = (&self.template, &self.traits) else {
            return Err(vec![Problem::new("template_error", "", "not a Jinja template")]);
        };
        profile::time(Stage::Render, || {
            render_jinja(
                template,
                traits,
                &self.tokenizer,
                conversation,
                &self.options.template_kwargs,
            )
        })
        .map_err(|p| vec![p])
    }

    fn tokenize_rendered(&self, rendered: &Rendered) -> std::result::Result<Encoded, Vec<Problem>> {
        let tokens = profile::time(Stage::Tokenize, || {
            self.tokenizer
                .encode(Flavor::Transformers, &rendered.text, &rendered.content, true)
        })
        .map_err(|p| vec![p])?;
        let mask = profile::time(Stage::Mask, || token_mask(&tokens.starts, &rendered.trained));
        Ok(Encoded {
            ids: tokens.ids,
            mask,
            truncated_from: None,
            chunk_length: None,
        })
    }

    fn apply_policy(&self, encoded: std::result::Result<Encoded, Vec<Problem>>) -> Outcome {
        let mut encoded = match encoded {
            Ok(e) => e,
            Err(problems) => return Outcome::Rejected(problems),
        };
        let chunked = encoded.chunk_length.is_some();
        if let Some(max) = self.options.max_length.filter(|&m| encoded.ids.len() > m && !chunked) {
            let len = encoded.ids.len();
            match self.options.overlong {
                Overlong::Truncate => {
                    encoded.ids.truncate(max);
                    encoded.mask.truncate(max);
                    encoded.truncated_from = Some(len);
                }
                Overlong::Drop | Overlong::Error => {
                    return Outcome::Dropped {
                        problem: Problem::new(DROP_TOO_LONG, "", format!("{len} tokens > max_length {max}")).hint(
                            "raise `max_length`, or use `overlong: truncate` to keep the first max_length tokens",
                        ),
                        tokens: len,
                    }
                }
            }
        }
        // Nothing predicts a sequence's first token, so it is never trained; in a packed row this
        // also keeps a document from being predicted across the boundary before it.
        if let Some(first) = encoded.mask.first_mut() {
            *first = 0;
        }
        if encoded.trained_tokens() == 0 {
            return Outcome::Dropped {
                problem: Problem::new(DROP_NO_TRAINED_TOKENS, "", "no token of this record is trained")
                    .hint("a record needs an assistant reply (or a message with \"loss\": true) inside max_length"),
                tokens: encoded.full_length(),
            };
        }
        Outcome::Encoded(encoded)
    }

    /// Who each token of `encode_full`'s ids belongs to: a role, or "template" for tokens the
    /// template adds between turns. For display (`sftpack inspect`), not for training.
    pub fn token_roles(&self, conversation: &Conversation) -> std::result::Result<Vec<&'static str>, Problem> {
        match &self.template {
            ChatTemplate::Jinja { .. } => {
                let rendered = self.render(conversation).map_err(|problems| {
                    problems
                        .into_iter()
                        .next()
                        .unwrap_or_else(|| Problem::new("template_error", "", ""))
                })?;
                let tokens = self
                    .tokenizer
                    .encode(Flavor::Transformers, &rendered.text, &rendered.content, true)?;
                let regions = message_regions(&rendered, conversation);
                let role_at = |start: usize| {
                    regions
                        .iter()
                        .zip(&conversation.messages)
                        .find(|(ranges, _)| ranges.iter().any(|r| r.contains(&start)))
                        .map_or("template", |(_, m)| m.role.as_str())
                };
                Ok(tokens.starts.iter().map(|&s| role_at(s)).collect())
            }
            ChatTemplate::Builtin(t) => {
                let mut roles = Vec::new();
                let count = |text: &str| {
                    self.tokenizer
                        .encode(Flavor::AsFile, text, &[], false)
                        .map(|t| t.ids.len())
                };
                let mut needs_bos = true;
                for seg in t.segments(conversation)? {
                    let bos = if needs_bos { self.bos.len() } else { 0 };
                    roles.extend(std::iter::repeat_n("template", bos));
                    roles.extend(std::iter::repeat_n(Role::User.as_str(), count(&seg.input)?));
                    let eos = if seg.need_eos { self.eos.len() } else { 0 };
                    roles.extend(std::iter::repeat_n(Role::Assistant.as_str(), count(&seg.output)? + eos));
                    needs_bos = seg.need_eos;
                    if !seg.sep.is_empty() {
                        roles.extend(std::iter::repeat_n("template", count(&seg.sep)?));
                    }
                }
                Ok(roles)
            }
            ChatTemplate::RawText => Err(no_chat_template()),
        }
    }

    fn encode_xtuner(
        &self,
        template: &BuiltinTemplate,
        conversation: &Conversation,
    ) -> std::result::Result<Encoded, Problem> {
        let mut out = Encoded::default();
        self.push_xtuner_turns(&template.segments(conversation)?, &mut out)?;
        Ok(out)
    }

    /// Appends XTuner's encoding of complete turns, each segment tokenized on its own as
    /// `encode_fn` does; returns whether the next turn starts with BOS.
    pub(crate) fn push_xtuner_turns(
        &self,
        segments: &[Segments],
        out: &mut Encoded,
    ) -> std::result::Result<bool, Problem> {
        let push = |ids: Vec<u32>, trained: bool, out: &mut Encoded| {
            out.mask.extend(std::iter::repeat_n(u8::from(trained), ids.len()));
            out.ids.extend(ids);
        };
        let mut needs_bos = true;
        for seg in segments {
            if needs_bos {
                push(self.bos.clone(), false, out);
            }
            let input = self
                .tokenizer
                .encode(Flavor::AsFile, &seg.input, &seg.input_content, false)?;
            push(input.ids, seg.input_trained, out);
            let output = self.tokenizer.encode(
                Flavor::AsFile,
                &seg.output,
                std::slice::from_ref(&seg.output_content),
                false,
            )?;
            push(output.ids, seg.output_trained, out);
            if seg.need_eos {
                push(self.eos.clone(), seg.output_trained, out);
            }
            needs_bos = seg.need_eos;
            if !seg.sep.is_empty() {
                let sep = self.tokenizer.encode(Flavor::AsFile, &seg.sep, &[], false)?;
                push(sep.ids, false, out);
            }
        }
        Ok(needs_bos)
    }
}

/// XTuner's get_bos_eos_token_ids: Qwen tokenizers get no BOS, ChatGLM a fixed pair, others
/// their configured bos/eos tokens.
pub(crate) fn no_chat_template() -> Problem {
    Problem::new(
        "not_a_conversation",
        "",
        "a raw-text job has no chat template: its records are documents, not conversations",
    )
    .hint("leave `format: text` out for chat data")
}

fn xtuner_bos_eos(tokenizer: &TokenizerBundle) -> (Vec<u32>, Vec<u32>) {
    let id_of = |token: &Option<String>| {
        token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
            .into_iter()
            .collect::<Vec<u32>>()
    };
    let class = tokenizer.tokenizer_class.as_deref().unwrap_or("");
    let bos = if class.starts_with("QWen") || class.starts_with("Qwen") {
        Vec::new()
    } else if class == "ChatGLMTokenizer" {
        vec![64790, 64792]
    } else {
        id_of(&tokenizer.special.bos_token)
    };
    (bos, id_of(&tokenizer.special.eos_token))
}
