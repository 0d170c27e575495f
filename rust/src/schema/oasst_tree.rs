//! OpenAssistant message trees, as the oasst1/oasst2 exports write them: one tree per record, a
//! prompter's message with the assistants' `replies`, each with the prompters' `replies`, ...
//!
//! ```text
//! root (prompter)                 one conversation per tree: from the root, at every level the
//! ├── reply rank 1 (assistant)    reply with the best (lowest) `rank` among those not deleted
//! └── reply rank 0 (assistant) <- and not failed in review (unranked replies after ranked ones,
//!     └── reply rank 0 (prompter) in file order); a last prompter message without an answer is
//!         └── ...                 dropped, as in training data it has nothing to learn from
//! ```

use serde_json::{Map, Value};

use super::{join, required_str, validate, wrong_type, Conversation, Message, Role};
use crate::error::Problem;

fn role_of(node: &Map<String, Value>, path: &str, problems: &mut Vec<Problem>) -> Option<Role> {
    match required_str(node, "role", path, problems)? {
        "prompter" | "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        other => {
            problems.push(
                Problem::new(
                    "unknown_role",
                    join(path, "role"),
                    format!("unknown oasst role \"{other}\""),
                )
                .hint("oasst message trees have the roles \"prompter\" and \"assistant\""),
            );
            None
        }
    }
}

/// Whether a reply may continue the conversation: not deleted, not rejected in review.
fn usable(reply: &Map<String, Value>) -> bool {
    reply.get("deleted") != Some(&Value::Bool(true)) && reply.get("review_result") != Some(&Value::Bool(false))
}

/// The index of the reply to follow: the best rank, unranked replies last, ties in file order.
fn best_reply(replies: &[Value]) -> Option<usize> {
    replies
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_object().filter(|r| usable(r)).map(|r| (i, r)))
        .min_by_key(|(i, r)| (r.get("rank").and_then(Value::as_u64).unwrap_or(u64::MAX), *i))
        .map(|(i, _)| i)
}

pub(super) fn parse(record: &Map<String, Value>) -> Result<Conversation, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut messages = Vec::new();
    let mut paths = Vec::new();
    let (mut node, mut path) = (record, String::new());
    loop {
        let role = role_of(node, &path, &mut problems);
        let text = required_str(node, "text", &path, &mut problems);
        if let (Some(role), Some(text)) = (role, text) {
            messages.push(Message::new(role, text));
            paths.push(path.clone());
        }
        let replies = match node.get("replies") {
            Some(Value::Array(replies)) => replies.as_slice(),
            None | Some(Value::Null) => &[],
            Some(other) => {
                problems.push(wrong_type(&join(&path, "replies"), "an array of messages", other));
                &[]
            }
        };
        let Some(next) = best_reply(replies) else { break };
        let Some(child) = replies[next].as_object() else { break };
        path = join(&path, &format!("replies[{next}]"));
        node = child;
    }
    if messages.last().is_some_and(|m| m.role == Role::User) {
        messages.pop();
    }
    let conversation = Conversation { messages, tools: None };
    if problems.is_empty() {
        validate(&conversation, &mut problems, |i| {
            paths.get(i).cloned().unwrap_or_default()
        });
    }
    if problems.is_empty() {
        Ok(conversation)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Map<String, Value> {
        let value = serde_json::json!({
            "message_id": "a", "parent_id": null, "role": "prompter", "text": "Q1", "replies": [
                {"role": "assistant", "text": "A1 second", "rank": 1, "replies": []},
                {"role": "assistant", "text": "A1 deleted", "rank": 0, "deleted": true, "replies": []},
                {"role": "assistant", "text": "A1 best", "rank": 0, "replies": [
                    {"role": "prompter", "text": "Q2", "rank": null, "replies": [
                        {"role": "assistant", "text": "A2 unranked", "replies": []},
                        {"role": "assistant", "text": "A2 failed review", "rank": 0, "review_result": false}
                    ]},
                    {"role": "prompter", "text": "Q2 unanswered", "replies": []}
                ]}
            ]
        });
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_top_ranked_path_becomes_one_conversation() {
        let conversation = parse(&tree()).expect("parses");
        let texts: Vec<&str> = conversation.messages.iter().map(Message::text).collect();
        assert_eq!(texts, ["Q1", "A1 best", "Q2", "A2 unranked"]);
        let roles: Vec<Role> = conversation.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User, Role::Assistant]);
    }

    #[test]
    fn an_unanswered_last_question_is_dropped_and_problems_name_their_path() {
        let mut root = tree();
        root.insert(
            "replies".into(),
            serde_json::json!([{"role": "assistant", "rank": 0, "replies": []}]),
        );
        let problems = parse(&root).expect_err("the reply has no text");
        assert_eq!(problems[0].path, "replies[0].text");
        root.insert("replies".into(), serde_json::json!([]));
        assert!(parse(&root).is_err(), "a lone question leaves nothing to train on");
    }
}
