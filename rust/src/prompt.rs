//! Prompt: what a model is given to write the next assistant turn, and the tokens that end a
//! turn. Both come from the template and tokenization mode a pack was made with, so a model
//! generates from exactly the ids it was trained to continue:
//!
//! ```text
//! training ids   [ <s> user: Hi  assistant: | Hello! <eot> | user: Bye  assistant: | Ciao <eot> ]
//! mask             0   0     0   0            1      1       0     0    0            1    1
//! prompt(turns before the 2nd reply) = every id up to the 2nd run of trained ids
//! stop tokens    = the trained end-of-turn ids (<eot>), EOS, and the template's stop words
//! ```
//!
//! Jinja templates render with `add_generation_prompt` and tokenize the whole text (what
//! transformers' `apply_chat_template(..., add_generation_prompt=True)` gives); XTuner templates
//! encode the turns so far segment by segment, as their training ids were, then the unanswered
//! input. Special-token text typed inside messages stays text, as in training.

use serde::Serialize;
use serde_json::Value;

use crate::encode::{Encoded, Encoder};
use crate::error::Problem;
use crate::mask::{content_ranges, render_jinja};
use crate::schema::{Conversation, Message, Role};
use crate::template::ChatTemplate;
use crate::tokenize::Flavor;

/// What ends a generated turn: token ids, and texts for end markers that the tokenizer has no
/// single token for (an XTuner suffix such as `<eoa>` on a tokenizer without it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StopTokens {
    pub ids: Vec<u32>,
    pub texts: Vec<String>,
}

const PROBE_USER: &str = "sftpack probe question";
const PROBE_REPLY: &str = "sftpack probe reply";

impl Encoder {
    /// The ids a model continues to write the reply to `conversation`, which must end with a
    /// message that is not the assistant's.
    pub fn prompt(&self, conversation: &Conversation) -> Result<Vec<u32>, Problem> {
        if conversation.messages.last().is_none_or(|m| m.role == Role::Assistant) {
            return Err(Problem::new(
                "nothing_to_answer",
                "",
                "a generation prompt needs a conversation that ends with a user (or tool) message",
            )
            .hint("append the user's message; the assistant's reply is what gets generated"));
        }
        match &self.template {
            ChatTemplate::Jinja { template, .. } => {
                let messages: Vec<Value> = conversation.messages.iter().map(Message::to_template_value).collect();
                let text = template.render(
                    &messages,
                    conversation.tools.as_ref(),
                    true,
                    &self.options.template_kwargs,
                )?;
                let content = content_ranges(&text, conversation, &self.tokenizer);
                Ok(self.tokenizer.encode(Flavor::Transformers, &text, &content, false)?.ids)
            }
            ChatTemplate::Builtin(t) => {
                let prompt = t.prompt_segments(conversation)?;
                let mut out = Encoded::default();
                if self.push_xtuner_turns(&prompt.history, &mut out)? {
                    out.ids.extend_from_slice(&self.bos);
                }
                let input = self
                    .tokenizer
                    .encode(Flavor::AsFile, &prompt.input, &prompt.input_content, false)?;
                out.ids.extend(input.ids);
                Ok(out.ids)
            }
            ChatTemplate::RawText => Err(crate::encode::no_chat_template()),
        }
    }

    /// The tokens that end an assistant turn: the special tokens training put (and trained)
    /// right after a reply, the template's stop words, and EOS.
    pub fn stop_tokens(&self) -> StopTokens {
        let mut stops = StopTokens::default();
        self.add_stop(&self.trained_turn_end(), &mut stops);
        if let ChatTemplate::Builtin(t) = &self.template {
            if !t.suffix_as_eos {
                stops.ids.extend_from_slice(&self.eos);
            }
            for word in &t.stop_words {
                self.add_stop(word, &mut stops);
            }
        }
        if let Some(eos) = self.tokenizer.special.eos_token.as_deref() {
            stops.ids.extend(self.tokenizer.token_to_id(eos));
        }
        stops.ids.sort_unstable();
        stops.ids.dedup();
        stops.texts.sort();
        stops.texts.dedup();
        stops
    }

    /// The text that training trains after a reply's content (`<|im_end|>`, `<|eot_id|>`, an
    /// XTuner suffix), found by encoding a probe conversation.
    fn trained_turn_end(&self) -> String {
        match &self.template {
            ChatTemplate::Builtin(t) => t.suffix.clone(),
            ChatTemplate::RawText => String::new(),
            ChatTemplate::Jinja { template, .. } => {
                let Some(traits) = self.traits.as_ref() else {
                    return String::new();
                };
                let probe = Conversation {
                    messages: vec![
                        Message::new(Role::User, PROBE_USER),
                        Message::new(Role::Assistant, PROBE_REPLY),
                    ],
                    tools: None,
                };
                let Ok(rendered) =
                    render_jinja(template, traits, &self.tokenizer, &probe, &self.options.template_kwargs)
                else {
                    return String::new();
                };
                let Some(at) = rendered.text.rfind(PROBE_REPLY) else {
                    return String::new();
                };
                let content_end = at + PROBE_REPLY.len();
                rendered
                    .trained
                    .iter()
                    .find(|span| span.contains(&at))
                    .map(|span| rendered.text[content_end..span.end.max(content_end)].to_string())
                    .unwrap_or_default()
            }
        }
    }

    /// Adds the special tokens spelled in `text` as ids, or `text` itself when it spells none,
    /// with the text it decodes back to when that differs (a SentencePiece tokenizer writes the
    /// `▁` in DeepSeek's `<｜end▁of▁sentence｜>` back as a space): generated text is decoded.
    fn add_stop(&self, text: &str, stops: &mut StopTokens) {
        let specials = self.tokenizer.special_tokens_in(text);
        if specials.is_empty() {
            let text = text.trim();
            if !text.is_empty() {
                stops.texts.push(text.to_string());
                let decoded = self
                    .tokenizer
                    .encode(Flavor::AsFile, text, &[], false)
                    .map(|tokens| self.tokenizer.decode(&tokens.ids));
                if let Ok(decoded) = decoded.as_deref().map(str::trim) {
                    if !decoded.is_empty() && decoded != text {
                        stops.texts.push(decoded.to_string());
                    }
                }
            }
            return;
        }
        for range in specials {
            stops.ids.extend(self.tokenizer.token_to_id(&text[range]));
        }
    }
}
