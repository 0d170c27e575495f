//! XTuner's PROMPT_TEMPLATE table (kept as data in `templates/xtuner.json`) and its rules for
//! turning a conversation into per-turn segments, as XTuner 0.2.0's `openai_map_fn` →
//! `template_map_fn` → `encode_fn` do:
//!
//! ```text
//! turn 0: [BOS] SYSTEM.format(system) + INSTRUCTION.format(input) | output + SUFFIX | [EOS] | SEP
//! turn 1: [BOS] INSTRUCTION.format(input)                        | output + SUFFIX | [EOS] | SEP
//!         ^ untrained                                              ^ trained         ^ trained ^ untrained
//! ```
//! EOS is appended (and BOS starts the next turn) unless SUFFIX_AS_EOS. Leading assistant
//! messages are dropped, consecutive user messages are joined without a separator, a system
//! message applies to the next turn only, and a trailing user message without a reply is dropped.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::schema::{Conversation, Role};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BuiltinTemplate {
    #[serde(default)]
    pub name: String,
    pub system: Option<String>,
    pub instruction: String,
    pub suffix: String,
    pub suffix_as_eos: bool,
    pub sep: String,
    pub stop_words: Vec<String>,
}

fn table() -> &'static BTreeMap<String, BuiltinTemplate> {
    static TABLE: OnceLock<BTreeMap<String, BuiltinTemplate>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: BTreeMap<String, BuiltinTemplate> =
            serde_json::from_str(include_str!("../../templates/xtuner.json")).unwrap_or_default();
        for (name, t) in table.iter_mut() {
            t.name = name.clone();
        }
        table
    })
}

pub fn names() -> Vec<&'static str> {
    table().keys().map(String::as_str).collect()
}

pub fn get(name: &str) -> Option<BuiltinTemplate> {
    table().get(name).cloned()
}

/// One XTuner turn after template_map_fn, with the byte ranges of message content inside
/// `input` (so special tokens typed by users stay text).
#[derive(Debug, Clone, PartialEq)]
pub struct Segments {
    pub input: String,
    pub input_content: Vec<Range<usize>>,
    pub input_trained: bool,
    pub output: String,
    pub output_content: Range<usize>,
    pub output_trained: bool,
    pub need_eos: bool,
    pub sep: String,
}

/// A generation prompt in XTuner's terms: the turns so far, then the unanswered input.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSegments {
    pub history: Vec<Segments>,
    pub input: String,
    /// Byte ranges of message content inside `input`.
    pub input_content: Vec<Range<usize>>,
}

/// Python's `str.format` for the named fields XTuner templates use; returns the text and the
/// byte ranges where values were inserted.
fn format_fields(template: &str, fields: &[(&str, &str)]) -> (String, Vec<Range<usize>>) {
    let mut out = String::with_capacity(template.len() + 64);
    let mut ranges = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        let tail = &rest[open..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        let close = tail.find('}').unwrap_or(tail.len() - 1);
        let key = &tail[1..close];
        match fields.iter().find(|(k, _)| *k == key) {
            Some((_, value)) => {
                ranges.push(out.len()..out.len() + value.len());
                out.push_str(value);
            }
            None => out.push_str(&tail[..=close]),
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    (out, ranges)
}

struct Turn {
    system: String,
    input: String,
    input_trained: bool,
    output: String,
    output_trained: bool,
}

/// What openai_map_fn makes of a conversation: its complete turns, and the system and user text
/// after the last reply that no reply answers yet (dropped in training; a generation prompt).
struct Turns {
    complete: Vec<Turn>,
    pending_system: String,
    pending_input: String,
    /// A system or user message follows the last reply.
    pending: bool,
}

/// openai_map_fn: messages → turns.
fn turns(conversation: &Conversation) -> Result<Turns, Problem> {
    let messages = &conversation.messages;
    let first = messages
        .iter()
        .position(|m| m.role != Role::Assistant)
        .unwrap_or(messages.len());
    let mut complete = Vec::new();
    let (mut system, mut input, mut input_trained) = (String::new(), String::new(), false);
    let mut pending = false;
    for (i, m) in messages.iter().enumerate().skip(first) {
        pending = m.role != Role::Assistant;
        match m.role {
            Role::System => {
                system = m.text().to_string();
                input_trained |= m.loss == Some(true);
            }
            Role::User => {
                input.push_str(m.text());
                input_trained |= m.loss == Some(true);
            }
            Role::Assistant => {
                complete.push(Turn {
                    system: std::mem::take(&mut system),
                    input: std::mem::take(&mut input),
                    input_trained: std::mem::take(&mut input_trained),
                    output: m.text().to_string(),
                    output_trained: m.trained(),
                });
            }
            Role::Tool => {
                return Err(Problem::new(
                    "unsupported_role",
                    format!("messages[{i}].role"),
                    "XTuner prompt templates have no tool role",
                )
                .hint("use the tokenizer's own chat template (leave `template` out) for tool-calling data"));
            }
        }
    }
    Ok(Turns {
        complete,
        pending_system: system,
        pending_input: input,
        pending,
    })
}

impl BuiltinTemplate {
    /// template_map_fn: turns → segments.
    pub fn segments(&self, conversation: &Conversation) -> Result<Vec<Segments>, Problem> {
        let turns = turns(conversation)?;
        let mut out = Vec::new();
        for (i, turn) in turns.complete.into_iter().enumerate() {
            let (input, input_content) = self.format_input(&turn.system, &turn.input, i + 1)?;
            out.push(Segments {
                input,
                input_content,
                input_trained: turn.input_trained,
                output_content: 0..turn.output.len(),
                output: turn.output + &self.suffix,
                output_trained: turn.output_trained,
                need_eos: !self.suffix_as_eos,
                sep: self.sep.clone(),
            });
        }
        Ok(out)
    }

    /// The segments of the complete turns, then the input of the turn that a generated reply
    /// would complete (round n + 1).
    pub fn prompt_segments(&self, conversation: &Conversation) -> Result<PromptSegments, Problem> {
        let pending = turns(conversation)?;
        if !pending.pending {
            return Err(Problem::new(
                "nothing_to_answer",
                "",
                "the conversation does not end with a user message",
            )
            .hint("a generation prompt needs a user message after the last assistant reply"));
        }
        let segments = self.segments(conversation)?;
        let (input, input_content) =
            self.format_input(&pending.pending_system, &pending.pending_input, segments.len() + 1)?;
        Ok(PromptSegments {
            history: segments,
            input,
            input_content,
        })
    }

    /// SYSTEM.format(system) + INSTRUCTION.format(input, round), and where the values sit.
    fn format_input(&self, system: &str, input: &str, round: usize) -> Result<(String, Vec<Range<usize>>), Problem> {
        let round = round.to_string();
        let (text, content) = format_fields(&self.instruction, &[("input", input), ("round", &round)]);
        if system.is_empty() {
            return Ok((text, content));
        }
        let Some(system_template) = &self.system else {
            return Err(Problem::new(
                "unsupported_system",
                "",
                format!("the {} template has no system prompt", self.name),
            )
            .hint("remove the system message or choose a template with one"));
        };
        let (prefix, system_content) = format_fields(system_template, &[("system", system)]);
        let shift = prefix.len();
        let content = system_content
            .into_iter()
            .chain(content.into_iter().map(|r| r.start + shift..r.end + shift))
            .collect();
        Ok((prefix + &text, content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Message;

    #[test]
    fn every_xtuner_template_is_there() {
        let expected = "default zephyr internlm_chat internlm2_chat moss_sft llama2_chat code_llama_chat chatglm2 chatglm3 qwen_chat baichuan_chat baichuan2_chat wizardlm wizardcoder vicuna deepseek_coder deepseekcoder deepseek_moe deepseek_v2 mistral mixtral minicpm minicpm3 gemma cohere_chat llama3_chat phi3_chat";
        let mut want: Vec<&str> = expected.split(' ').collect();
        want.sort_unstable();
        assert_eq!(names(), want);
    }

    #[test]
    fn format_fields_records_value_ranges() {
        let (text, ranges) = format_fields("[Round {round}] {input}!", &[("input", "hi {x}"), ("round", "2")]);
        assert_eq!(text, "[Round 2] hi {x}!");
        assert_eq!(ranges, vec![7..8, 10..16]);
    }

    #[test]
    fn openai_map_fn_rules() {
        let conv = Conversation {
            messages: vec![
                Message::new(Role::Assistant, "dropped"),
                Message::new(Role::System, "S"),
                Message::new(Role::User, "a"),
                Message::new(Role::User, "b"),
                Message::new(Role::Assistant, "A"),
                Message::new(Role::User, "unanswered"),
            ],
            tools: None,
        };
        let t = get("qwen_chat").expect("exists");
        let segs = t.segments(&conv).expect("ok");
        assert_eq!(segs.len(), 1);
        assert_eq!(
            segs[0].input,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(segs[0].output, "A<|im_end|>");
        assert!(!segs[0].need_eos);
    }
}
