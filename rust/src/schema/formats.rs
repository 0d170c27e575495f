//! The formats other than OpenAI's, each mapped to the canonical conversation.

use serde_json::{Map, Value};

use super::{join, optional_str, parse_loss, required_str, validate, wrong_type, Conversation, Message, Role};
use crate::error::Problem;

fn finish(
    conversation: Conversation,
    mut problems: Vec<Problem>,
    path_of: impl Fn(usize) -> String,
) -> Result<Conversation, Vec<Problem>> {
    if problems.is_empty() {
        validate(&conversation, &mut problems, path_of);
    }
    if problems.is_empty() {
        Ok(conversation)
    } else {
        Err(problems)
    }
}

fn array<'a>(record: &'a Map<String, Value>, key: &str, problems: &mut Vec<Problem>) -> &'a [Value] {
    match record.get(key) {
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(wrong_type(key, "an array", other));
            &[]
        }
        None => &[],
    }
}

fn object<'a>(value: &'a Value, path: &str, problems: &mut Vec<Problem>) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(obj) => Some(obj),
        other => {
            problems.push(wrong_type(path, "an object", other));
            None
        }
    }
}

/// A record-level `"system"` field becomes the first message.
fn top_level_system(
    record: &Map<String, Value>,
    conversation: &mut Conversation,
    paths: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) {
    if let Some(system) = optional_str(record, "system", "", problems).filter(|s| !s.is_empty()) {
        conversation.messages.push(Message::new(Role::System, system));
        paths.push("system".to_string());
    }
}

/// XTuner's multi-turn format: `{"conversation": [{"system"?, "input", "output"}]}`.
/// Firefly's `{"human", "assistant"}` turns are read the same way.
pub(super) fn xtuner(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut conversation = Conversation::default();
    let mut message_paths = Vec::new();
    for (i, turn) in array(record, "conversation", &mut problems).iter().enumerate() {
        let path = format!("conversation[{i}]");
        let Some(turn) = object(turn, &path, &mut problems) else {
            continue;
        };
        let (input_key, output_key) = if turn.contains_key("human") {
            ("human", "assistant")
        } else {
            ("input", "output")
        };
        if let Some(system) = optional_str(turn, "system", &path, &mut problems).filter(|s| !s.is_empty()) {
            conversation.messages.push(Message::new(Role::System, system));
            message_paths.push(join(&path, "system"));
        }
        let input = optional_str(turn, input_key, &path, &mut problems).unwrap_or("");
        conversation.messages.push(Message::new(Role::User, input));
        message_paths.push(join(&path, input_key));
        if let Some(output) = required_str(turn, output_key, &path, &mut problems) {
            let mut reply = Message::new(Role::Assistant, output);
            if let Some(flag) = turn.get("output_with_loss") {
                match parse_loss(flag, &join(&path, "output_with_loss")) {
                    Ok(loss) => reply.loss = loss,
                    Err(p) => problems.push(p),
                }
            }
            conversation.messages.push(reply);
            message_paths.push(join(&path, output_key));
        }
    }
    finish(conversation, problems, |i| message_paths[i].clone())
}

/// Alpaca: `{"instruction", "input"?, "output", "system"?, "history"?: [[query, reply], ...]}`.
/// The user turn is the instruction, then a newline and the input when there is one.
pub(super) fn alpaca(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut conversation = Conversation::default();
    let mut paths = Vec::new();
    top_level_system(record, &mut conversation, &mut paths, &mut problems);
    for (i, pair) in array(record, "history", &mut problems).iter().enumerate() {
        let path = format!("history[{i}]");
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(q), Value::String(a)]) => {
                conversation.messages.push(Message::new(Role::User, q.as_str()));
                conversation.messages.push(Message::new(Role::Assistant, a.as_str()));
                paths.push(format!("{path}[0]"));
                paths.push(format!("{path}[1]"));
            }
            _ => problems.push(wrong_type(&path, "a [query, reply] pair of strings", pair)),
        }
    }
    let instruction = required_str(record, "instruction", "", &mut problems).unwrap_or("");
    let input = optional_str(record, "input", "", &mut problems).unwrap_or("");
    let prompt = if input.is_empty() {
        instruction.to_string()
    } else {
        format!("{instruction}\n{input}")
    };
    conversation.messages.push(Message::new(Role::User, prompt));
    paths.push("instruction".into());
    if let Some(output) = required_str(record, "output", "", &mut problems) {
        conversation.messages.push(Message::new(Role::Assistant, output));
        paths.push("output".into());
    }
    finish(conversation, problems, |i| paths[i].clone())
}

fn sharegpt_role(from: &str) -> Option<Role> {
    match from {
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" | "model" | "chatgpt" | "bing" | "bard" | "function_call" => Some(Role::Assistant),
        "system" => Some(Role::System),
        "observation" | "tool" | "function" => Some(Role::Tool),
        _ => None,
    }
}

/// A ShareGPT `function_call` turn holds `{"name", "arguments"}` as JSON text; it becomes an
/// assistant message with OpenAI `tool_calls`.
fn tool_call_message(value: &str) -> Message {
    let mut message = Message::new(Role::Assistant, value);
    if let Ok(Value::Object(call)) = serde_json::from_str::<Value>(value) {
        if let Some(name) = call.get("name").cloned() {
            let arguments = call.get("arguments").cloned().unwrap_or(Value::Object(Map::new()));
            let function = serde_json::json!({"name": name, "arguments": arguments});
            message.content = Some(String::new());
            message.extra.insert(
                "tool_calls".into(),
                serde_json::json!([{"type": "function", "function": function}]),
            );
        }
    }
    message
}

/// ShareGPT: `{"conversations": [{"from", "value", "loss"?}], "system"?, "tools"?}`.
pub(super) fn sharegpt(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut conversation = Conversation::default();
    let mut paths = Vec::new();
    top_level_system(record, &mut conversation, &mut paths, &mut problems);
    conversation.tools = match record.get("tools") {
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(tools) => Some(tools),
            Err(e) => {
                problems.push(Problem::new(
                    "invalid_json",
                    "tools",
                    format!("\"tools\" holds invalid JSON text: {e}"),
                ));
                None
            }
        },
        Some(Value::Null) | None => None,
        Some(other) => Some(other.clone()),
    };
    for (i, turn) in array(record, "conversations", &mut problems).iter().enumerate() {
        let path = format!("conversations[{i}]");
        let Some(turn) = object(turn, &path, &mut problems) else {
            continue;
        };
        let from = required_str(turn, "from", &path, &mut problems);
        let value = required_str(turn, "value", &path, &mut problems);
        let (Some(from), Some(value)) = (from, value) else {
            continue;
        };
        let Some(role) = sharegpt_role(from) else {
            problems.push(
                Problem::new(
                    "unknown_role",
                    join(&path, "from"),
                    format!("unknown speaker \"{from}\""),
                )
                .hint("ShareGPT speakers are human, gpt, system, function_call and observation"),
            );
            continue;
        };
        let mut message = if from == "function_call" {
            tool_call_message(value)
        } else {
            Message::new(role, value)
        };
        if let Some(flag) = turn.get("loss") {
            match parse_loss(flag, &join(&path, "loss")) {
                Ok(loss) => message.loss = loss,
                Err(p) => problems.push(p),
            }
        }
        conversation.messages.push(message);
        paths.push(join(&path, "value"));
    }
    finish(conversation, problems, |i| paths[i].clone())
}

/// openassistant-guanaco: `{"text": "### Human: ... ### Assistant: ..."}`. As in XTuner, a
/// trailing human turn without a reply is dropped (it would carry no loss).
pub(super) fn oasst(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let text = required_str(record, "text", "", &mut problems).unwrap_or("");
    let mut turns = Vec::new();
    for part in text.trim().split("###") {
        let part = part.trim();
        if let Some(rest) = part.strip_prefix("Human:") {
            turns.push(Message::new(Role::User, rest.trim()));
        } else if let Some(rest) = part.strip_prefix("Assistant:") {
            turns.push(Message::new(Role::Assistant, rest.trim()));
        }
    }
    if turns.len() % 2 == 1 {
        turns.pop();
    }
    if problems.is_empty() && turns.is_empty() {
        problems.push(
            Problem::new(
                "empty_conversation",
                "text",
                "no \"### Human:\" / \"### Assistant:\" turns found",
            )
            .hint("the oasst format is \"### Human: question ### Assistant: answer\""),
        );
    }
    let conversation = Conversation {
        messages: turns,
        tools: None,
    };
    finish(conversation, problems, |_| "text".to_string())
}
