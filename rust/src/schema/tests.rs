use super::*;

fn parse(format: Format, text: &str) -> Result<Conversation, Vec<Problem>> {
    let record = parse_json(text).map_err(|p| vec![p])?;
    to_conversation(format, &record)
}

fn kinds(result: Result<Conversation, Vec<Problem>>) -> Vec<(&'static str, String)> {
    result
        .expect_err("should be rejected")
        .into_iter()
        .map(|p| (p.kind, p.path))
        .collect()
}

#[test]
fn openai_loss_flag_accepts_booleans_and_strings_in_any_case() {
    let c = parse(
        Format::OpenAi,
        r#"{"messages": [{"role": "user", "content": "q", "loss": "TRUE"}, {"role": "assistant", "content": "a", "loss": false}]}"#,
    )
    .expect("valid");
    assert_eq!(c.messages[0].loss, Some(true));
    assert!(c.messages[0].trained());
    assert!(!c.messages[1].trained());
}

#[test]
fn openai_bad_loss_flag_names_the_field() {
    let got = kinds(parse(
        Format::OpenAi,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss": "no"}]}"#,
    ));
    assert_eq!(got, vec![("invalid_loss_flag", "messages[1].loss".to_string())]);
}

#[test]
fn python_literals_get_a_hint() {
    let problem =
        parse_json(r#"{"messages": [{"role": "user", "content": "q", "loss": False}]}"#).expect_err("invalid");
    assert_eq!(problem.kind, "invalid_json");
    assert!(problem.hint.contains("lowercase"), "{problem}");
}

#[test]
fn every_problem_of_a_record_is_reported() {
    let got = kinds(parse(
        Format::OpenAi,
        r#"{"messages": [{"role": "bot", "content": "q"}, {"content": 3}, "x"]}"#,
    ));
    assert_eq!(
        got,
        vec![
            ("unknown_role", "messages[0].role".to_string()),
            ("missing_field", "messages[1].role".to_string()),
            ("wrong_type", "messages[1].content".to_string()),
            ("wrong_type", "messages[2]".to_string()),
        ]
    );
}

#[test]
fn empty_trained_assistant_is_rejected() {
    let got = kinds(parse(
        Format::OpenAi,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}"#,
    ));
    assert_eq!(got, vec![("empty_assistant", "messages[1]".to_string())]);
}

#[test]
fn extra_fields_reach_the_template_but_loss_does_not() {
    let c = parse(
        Format::OpenAi,
        r#"{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1"}], "loss": true}]}"#,
    )
    .expect("valid");
    let v = c.messages[0].to_template_value();
    assert!(v.get("tool_calls").is_some());
    assert!(v.get("loss").is_none());
    // OpenAI's null content beside tool_calls reaches templates as text they can search
    assert_eq!(v.get("content"), Some(&Value::String(String::new())));
}

#[test]
fn xtuner_turns_become_messages() {
    let c = parse(
        Format::Xtuner,
        r#"{"conversation": [{"system": "s", "input": "q1", "output": "a1"}, {"input": "q2", "output": "a2", "output_with_loss": false}]}"#,
    )
    .expect("valid");
    let roles: Vec<Role> = c.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        vec![Role::System, Role::User, Role::Assistant, Role::User, Role::Assistant]
    );
    assert!(!c.messages[4].trained());
}

#[test]
fn alpaca_joins_instruction_and_input() {
    let c = parse(
        Format::Alpaca,
        r#"{"instruction": "Translate", "input": "hola", "output": "hello"}"#,
    )
    .expect("valid");
    assert_eq!(c.messages[0].text(), "Translate\nhola");
    assert_eq!(c.messages[1].text(), "hello");
}

#[test]
fn sharegpt_function_calls_become_tool_calls() {
    let c = parse(
        Format::ShareGpt,
        r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {\"x\": 1}}"}, {"from": "observation", "value": "42"}, {"from": "gpt", "value": "42!"}], "tools": "[{\"name\": \"f\"}]"}"#,
    )
    .expect("valid");
    assert_eq!(c.messages[1].role, Role::Assistant);
    assert!(c.messages[1].extra.contains_key("tool_calls"));
    assert_eq!(c.messages[2].role, Role::Tool);
    assert!(c.tools.is_some());
}

#[test]
fn oasst_drops_a_trailing_question() {
    let c = parse(
        Format::Oasst,
        r####"{"text": "### Human: hi ### Assistant: hello ### Human: bye"}"####,
    )
    .expect("valid");
    assert_eq!(c.messages.len(), 2);
    assert_eq!(c.messages[1].text(), "hello");
}

#[test]
fn a_record_of_another_format_says_so() {
    let problems = parse(Format::OpenAi, r#"{"instruction": "x", "output": "y"}"#).expect_err("mismatch");
    assert_eq!(problems[0].kind, "missing_field");
    assert!(problems[0].message.contains("alpaca"), "{}", problems[0]);
}
