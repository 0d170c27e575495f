//! The OpenAI chat format with sftpack's (and XTuner's) per-message `loss` flag.

use serde_json::{Map, Value};

use super::{join, parse_loss, short, validate, wrong_type, Conversation, Message, Role};
use crate::error::Problem;

pub(super) fn parse(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut conversation = Conversation {
        tools: record.get("tools").filter(|t| !t.is_null()).cloned(),
        ..Conversation::default()
    };
    match record.get("messages") {
        Some(Value::Array(messages)) => {
            for (i, value) in messages.iter().enumerate() {
                let path = format!("messages[{i}]");
                if let Some(m) = parse_message(value, &path, &mut problems) {
                    conversation.messages.push(m);
                }
            }
        }
        Some(other) => problems.push(wrong_type("messages", "an array of messages", other)),
        None => unreachable_missing(&mut problems),
    }
    if problems.is_empty() {
        validate(&conversation, &mut problems, |i| format!("messages[{i}]"));
    }
    if problems.is_empty() {
        Ok(conversation)
    } else {
        Err(problems)
    }
}

fn unreachable_missing(problems: &mut Vec<Problem>) {
    problems.push(Problem::new("missing_field", "messages", "\"messages\" is required"));
}

fn parse_role(value: Option<&Value>, path: &str, problems: &mut Vec<Problem>) -> Option<Role> {
    let role = match value {
        Some(Value::String(s)) => s.as_str(),
        None | Some(Value::Null) => {
            problems.push(Problem::new(
                "missing_field",
                join(path, "role"),
                "every message needs a \"role\"",
            ));
            return None;
        }
        Some(other) => {
            problems.push(wrong_type(&join(path, "role"), "a string", other));
            return None;
        }
    };
    match role {
        "system" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "tool" => Some(Role::Tool),
        other => {
            problems.push(
                Problem::new("unknown_role", join(path, "role"), format!("unknown role \"{other}\""))
                    .hint("roles are system, user, assistant and tool (all lowercase)"),
            );
            None
        }
    }
}

/// Content is a string, null (tool calls only), or a list of `{"type": "text", "text": ...}` parts.
fn parse_content(value: Option<&Value>, path: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(t) if part.get("type").and_then(Value::as_str).is_none_or(|ty| ty == "text") => {
                        text.push_str(t)
                    }
                    _ => problems.push(
                        Problem::new(
                            "unsupported_content",
                            format!("{path}.content[{i}]"),
                            format!("only text parts are supported, found {}", short(part)),
                        )
                        .hint("use {\"type\": \"text\", \"text\": \"...\"} parts or a plain string"),
                    ),
                }
            }
            Some(text)
        }
        Some(other) => {
            problems.push(wrong_type(&join(path, "content"), "a string", other));
            None
        }
    }
}

fn parse_message(value: &Value, path: &str, problems: &mut Vec<Problem>) -> Option<Message> {
    let Value::Object(obj) = value else {
        problems.push(wrong_type(path, "a message object {\"role\", \"content\"}", value));
        return None;
    };
    let before = problems.len();
    let role = parse_role(obj.get("role"), path, problems);
    let content = parse_content(obj.get("content"), path, problems);
    if content.is_none() && !obj.contains_key("tool_calls") && !obj.contains_key("content") {
        problems.push(Problem::new(
            "missing_field",
            join(path, "content"),
            "every message needs \"content\"",
        ));
    }
    let loss = match obj.get("loss") {
        Some(v) => parse_loss(v, &join(path, "loss")).unwrap_or_else(|p| {
            problems.push(p);
            None
        }),
        None => None,
    };
    let extra: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "role" | "content" | "loss"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if problems.len() > before {
        return None;
    }
    Some(Message {
        role: role?,
        content,
        loss,
        extra,
    })
}
