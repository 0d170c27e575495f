//! Schema: parse one raw record into the canonical [`Conversation`], whatever its format, and
//! report every problem in it at once (kind, JSON path, message, fix).
//!
//! Formats (detected per file from its first record, or forced):
//! - `openai`: `{"messages": [{"role", "content", "loss"?, "name"?, "tool_calls"?, ...}], "tools"?}`
//! - `xtuner`: `{"conversation": [{"system"?, "input", "output", "output_with_loss"?}]}`
//! - `alpaca`: `{"instruction", "input"?, "output", "system"?, "history"?}`
//! - `sharegpt`: `{"conversations": [{"from", "value"}], "system"?, "tools"?}`
//! - `oasst`: `{"text": "### Human: ... ### Assistant: ..."}` (openassistant-guanaco)
//! - `text`: `{"text": "..."}`, a raw document for continued pretraining (never detected: it
//!   shares its key with `oasst`, so a job names it; plain .txt files are read as such records)

mod formats;
mod oasst_tree;
mod openai;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::Problem;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Whether a message of this role is trained when it carries no `loss` flag.
    pub fn trained_by_default(self) -> bool {
        self == Role::Assistant
    }
}

/// One message of the canonical conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    /// `None` for e.g. an assistant message that only calls tools (OpenAI `content: null`).
    pub content: Option<String>,
    /// Per-message override of the default (system/user/tool untrained, assistant trained).
    pub loss: Option<bool>,
    /// Every other field the chat template may read (`name`, `tool_calls`, `tool_call_id`, ...).
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(content.into()),
            loss: None,
            extra: Map::new(),
        }
    }

    pub fn trained(&self) -> bool {
        self.loss.unwrap_or_else(|| self.role.trained_by_default())
    }

    pub fn text(&self) -> &str {
        self.content.as_deref().unwrap_or("")
    }

    /// The message as a chat template sees it. Missing content (OpenAI's API writes `"content":
    /// null` beside `tool_calls`) is the empty string, which templates that test or search the
    /// content (Qwen3's `'</think>' in content`) accept.
    pub fn to_template_value(&self) -> Value {
        let mut map = Map::new();
        map.insert("role".into(), Value::String(self.role.as_str().into()));
        map.insert("content".into(), Value::String(self.text().to_string()));
        for (k, v) in &self.extra {
            map.insert(k.clone(), v.clone());
        }
        Value::Object(map)
    }
}

/// The one shape every format is mapped to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// Tool (function) definitions offered to the model, passed to the template as `tools`.
    pub tools: Option<Value>,
}

impl Conversation {
    /// The conversation as an OpenAI-format record (`messages` as templates see them, with each
    /// message's `loss` flag where it has one; `tools`), which parses back to the same.
    pub fn to_openai(&self) -> Value {
        let messages = self
            .messages
            .iter()
            .map(|m| {
                let mut value = m.to_template_value();
                if let (Some(loss), Value::Object(map)) = (m.loss, &mut value) {
                    map.insert("loss".into(), Value::Bool(loss));
                }
                value
            })
            .collect();
        let mut record = Map::new();
        record.insert("messages".into(), Value::Array(messages));
        if let Some(tools) = &self.tools {
            record.insert("tools".into(), tools.clone());
        }
        Value::Object(record)
    }
}

/// A dataset format sftpack reads natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    OpenAi,
    Xtuner,
    Alpaca,
    ShareGpt,
    /// OpenAssistant message trees (the oasst1/oasst2 export).
    #[serde(rename = "oasst_tree")]
    OasstTree,
    /// openassistant-guanaco's "### Human: ... ### Assistant: ..." text.
    Oasst,
    /// A raw document, every token trained (continued pretraining); see [`raw_text`].
    Text,
}

impl Format {
    /// In detection order: a message tree has `text` too, so it is told apart first; raw text,
    /// last, is never detected.
    pub const ALL: [Format; 7] = [
        Format::OpenAi,
        Format::Xtuner,
        Format::Alpaca,
        Format::ShareGpt,
        Format::OasstTree,
        Format::Oasst,
        Format::Text,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Xtuner => "xtuner",
            Format::Alpaca => "alpaca",
            Format::ShareGpt => "sharegpt",
            Format::OasstTree => "oasst_tree",
            Format::Oasst => "oasst",
            Format::Text => "text",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The key whose presence identifies the format.
    fn marker(self) -> &'static str {
        match self {
            Format::OpenAi => "messages",
            Format::Xtuner => "conversation",
            Format::Alpaca => "instruction",
            Format::ShareGpt => "conversations",
            Format::OasstTree => "replies",
            Format::Oasst | Format::Text => "text",
        }
    }

    /// The format a record's keys point to (never raw text, which a job names).
    pub fn detect(record: &Map<String, Value>) -> Option<Format> {
        Format::ALL
            .into_iter()
            .filter(|f| *f != Format::Text)
            .find(|f| record.contains_key(f.marker()))
    }
}

/// A raw-text record's document: its `text` string.
pub fn raw_text(record: &Map<String, Value>) -> Result<&str, Vec<Problem>> {
    match record.get("text") {
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(vec![Problem::new(
            "wrong_type",
            "text",
            format!("`text` must be a string, found {}", json_type(other)),
        )]),
        None => {
            let keys: Vec<&str> = record.keys().map(String::as_str).collect();
            Err(vec![Problem::new(
                "missing_field",
                "text",
                format!("a raw-text record needs a \"text\" field; the record has {keys:?}"),
            )
            .hint(
                "write {\"text\": \"...\"} per document, or map other fields with a map function",
            )])
        }
    }
}

/// Parses a record's JSON text.
pub fn parse_json(text: &str) -> Result<Map<String, Value>, Problem> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Problem::new(
            "not_an_object",
            "",
            format!("a record must be a JSON object, found {}", json_type(&other)),
        )
        .hint("each line (or array element) must be one object such as {\"messages\": [...]}")),
        Err(e) => Err(json_syntax_problem(text, &e)),
    }
}

fn json_syntax_problem(text: &str, e: &serde_json::Error) -> Problem {
    let kind = if e.is_eof() { "truncated_json" } else { "invalid_json" };
    let problem = Problem::new(kind, "", format!("invalid JSON: {e}"));
    let at = text
        .lines()
        .nth(e.line().saturating_sub(1))
        .map(|l| l.get(e.column().saturating_sub(1)..).unwrap_or(""))
        .unwrap_or("");
    if ["True", "False"].iter().any(|w| at.starts_with(w)) {
        problem.hint("JSON booleans are lowercase: write true/false, not Python's True/False")
    } else if at.starts_with("None") {
        problem.hint("JSON writes Python's None as null")
    } else if at.starts_with('\'') {
        problem.hint("JSON strings take double quotes; this looks like a Python dict (use json.dumps, not str)")
    } else {
        problem
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Maps a parsed record in `format` to the canonical conversation.
/// A record's conversation in the `format` given, or the one its keys name: the one way every
/// source (a JSON line, an array element, a Parquet row, a map function's result, a record from
/// Python) becomes a conversation.
pub fn record_conversation(record: &Map<String, Value>, format: Option<Format>) -> Result<Conversation, Vec<Problem>> {
    let Some(format) = format.or_else(|| Format::detect(record)) else {
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        return Err(vec![Problem::new(
            "unknown_format",
            "",
            format!("cannot tell the format of a record with keys {keys:?}"),
        )
        .hint("records need \"messages\" (openai), \"conversation\" (xtuner), \"conversations\" (sharegpt), \"instruction\" (alpaca) or \"text\" (oasst); other formats need a map function")]);
    };
    to_conversation(format, record)
}

pub fn to_conversation(format: Format, record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let marker = format.marker();
    if !record.contains_key(marker) {
        let found = Format::detect(record).map_or(String::new(), |f| {
            format!(" (this record looks like the {} format)", f.name())
        });
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        return Err(vec![Problem::new(
            "missing_field",
            marker,
            format!(
                "the {} format needs a \"{marker}\" field; the record has {keys:?}{found}",
                format.name()
            ),
        )
        .hint("keep one format per file, or use `format` to say which one")]);
    }
    match format {
        Format::OpenAi => openai::parse(record),
        Format::Xtuner => formats::xtuner(record),
        Format::Alpaca => formats::alpaca(record),
        Format::ShareGpt => formats::sharegpt(record),
        Format::OasstTree => oasst_tree::parse(record),
        Format::Oasst => formats::oasst(record),
        Format::Text => Err(vec![Problem::new(
            "not_a_conversation",
            "",
            "a raw-text record is a document, not a conversation",
        )
        .hint("raw text trains as it is; chat commands (samples, prompt) need a chat format")]),
    }
}

/// Reads a `loss` flag: a JSON boolean, or the strings "true"/"false" in any case.
pub(crate) fn parse_loss(value: &Value, path: &str) -> Result<Option<bool>, Problem> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        other => Err(Problem::new(
            "invalid_loss_flag",
            path,
            format!("\"loss\" must be true or false, found {}", short(other)),
        )
        .hint("write \"loss\": true or \"loss\": false (the strings \"true\"/\"false\" are accepted too)")),
    }
}

/// A short quote of a JSON value for messages.
pub(crate) fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        let cut: String = text.chars().take(40).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Reads a required string field, recording a problem if it is missing or not a string.
pub(crate) fn required_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a str> {
    if matches!(obj.get(key), None | Some(Value::Null)) {
        problems.push(Problem::new(
            "missing_field",
            join(path, key),
            format!("\"{key}\" is required"),
        ));
        return None;
    }
    optional_str(obj, key, path, problems)
}

/// Reads an optional string field (absent or null is None).
pub(crate) fn optional_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<&'a str> {
    match obj.get(key) {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => None,
        Some(other) => {
            problems.push(wrong_type(&join(path, key), "a string", other));
            None
        }
    }
}

pub(crate) fn wrong_type(path: &str, expected: &str, found: &Value) -> Problem {
    Problem::new(
        "wrong_type",
        path,
        format!("expected {expected}, found {} {}", json_type(found), short(found)),
    )
}

/// `a` + `.b` as a JSON path (`messages[2].content`).
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Final checks shared by every format.
pub(crate) fn validate(conversation: &Conversation, problems: &mut Vec<Problem>, path_of: impl Fn(usize) -> String) {
    if conversation.messages.is_empty() {
        problems.push(Problem::new(
            "empty_conversation",
            "",
            "the conversation has no messages",
        ));
    }
    for (i, m) in conversation.messages.iter().enumerate() {
        let empty = m.text().trim().is_empty();
        if m.role == Role::Assistant && empty && !m.extra.contains_key("tool_calls") && m.trained() {
            problems.push(
                Problem::new(
                    "empty_assistant",
                    path_of(i),
                    "an assistant message to be trained has no content",
                )
                .hint("remove the record, fill in the reply, or set \"loss\": false on it"),
            );
        }
    }
}

#[cfg(test)]
mod tests;
