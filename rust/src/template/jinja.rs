//! Hugging Face chat templates (Jinja), rendered the way transformers renders them: trim_blocks
//! and lstrip_blocks on, loop controls, `raise_exception`, `strftime_now`, Python's string and
//! dict methods, and transformers' own `tojson` (json.dumps with ensure_ascii=False).

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};
use serde_json::Value;

use crate::error::{Error, Problem, Result};
use crate::tokenize::SpecialTokens;

const TEMPLATE_NAME: &str = "chat";

pub struct JinjaTemplate {
    env: Environment<'static>,
    pub source: String,
    /// `bos_token` & co., as template values once (every render passes them).
    globals: Vec<(&'static str, JValue)>,
}

/// `{% generation %}` blocks (TRL's training templates) only mark assistant text for
/// transformers; they render their body unchanged, so they become plain `if true` blocks.
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        let Some(close) = rest[open..].find("%}") else { break };
        let tag = &rest[open..open + close + 2];
        let inner = tag[2..tag.len() - 2].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..open]);
        match inner {
            "generation" => out.push_str(&tag.replace("generation", "if true")),
            "endgeneration" => out.push_str(&tag.replace("endgeneration", "endif")),
            _ => out.push_str(tag),
        }
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// Jinja2's `float` filter: a number, or `default` (0.0) when the value does not parse.
fn float_filter(value: JValue, default: Option<f64>) -> f64 {
    let parsed = match value.as_str() {
        Some(text) => text.trim().parse::<f64>().ok(),
        None => f64::try_from(value).ok(),
    };
    parsed.unwrap_or(default.unwrap_or(0.0))
}

/// Jinja2's `int` filter: an integer, or `default` (0) when the value does not parse.
fn int_filter(value: JValue, default: Option<i64>) -> i64 {
    let parsed = match value.as_str() {
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| text.trim().parse::<f64>().ok().map(|f| f as i64)),
        None => i64::try_from(value.clone())
            .ok()
            .or_else(|| f64::try_from(value).ok().map(|f| f as i64)),
    };
    parsed.unwrap_or(default.unwrap_or(0))
}

fn raise_exception(message: String) -> std::result::Result<JValue, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn tojson(value: JValue, kwargs: Kwargs) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let json = if sort_keys == Some(true) { sorted(json) } else { json };
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(JValue::from_safe_string(out))
}

fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Writes JSON as Python's `json.dumps(x, ensure_ascii=False, indent=indent)` does.
pub(crate) fn python_json(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                python_json(v, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        Value::Number(n) if n.is_f64() => out.push_str(&python_float(n.as_f64().unwrap_or(0.0))),
        other => out.push_str(&other.to_string()),
    }
}

fn python_float(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// `strftime_now(format)`: the current UTC time, formatted like Python's strftime for the
/// directives chat templates use (%d %m %Y %y %B %b %A %a %H %M %S %j %%).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(secs, &format)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub(crate) fn strftime(epoch_secs: i64, format: &str) -> String {
    let days = epoch_secs.div_euclid(86_400);
    let secs = epoch_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(MONTHS[month as usize - 1]),
            Some('b') => out.push_str(&MONTHS[month as usize - 1][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('j') => out.push_str(&format!("{:03}", day_of_year(year, month, day))),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn day_of_year(year: i64, month: u32, day: u32) -> u32 {
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    CUMULATIVE[month as usize - 1] + day + u32::from(leap && month > 2)
}

impl JinjaTemplate {
    /// Compiles a template; `special` supplies `bos_token` & co., `config` the other
    /// tokenizer_config keys transformers passes to templates.
    pub fn new(source: &str, special: &SpecialTokens) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter("float", float_filter);
        env.add_filter("int", int_filter);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source))
            .map_err(|e| Error::template(format!("the chat template does not compile: {e:#}")))?;
        let globals = [
            ("bos_token", &special.bos_token),
            ("eos_token", &special.eos_token),
            ("unk_token", &special.unk_token),
            ("pad_token", &special.pad_token),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, JValue::from(value.as_deref()?))))
        .collect();
        Ok(JinjaTemplate {
            env,
            source: source.to_string(),
            globals,
        })
    }

    /// Renders `messages` (template values). `extra` holds caller kwargs (e.g. enable_thinking).
    pub fn render(
        &self,
        messages: &[Value],
        tools: Option<&Value>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Value>,
    ) -> std::result::Result<String, Problem> {
        let messages: Vec<JValue> = messages.iter().map(JValue::from_serialize).collect();
        let tools = tools.map(JValue::from_serialize);
        self.render_prepared(&messages, tools.as_ref(), add_generation_prompt, extra)
    }

    /// [`JinjaTemplate::render`] with messages and tools already converted to template values,
    /// so that a conversation rendered several times (its prefixes, for the masks) converts them
    /// once: template values share their contents, so slicing them copies no text.
    pub fn render_prepared(
        &self,
        messages: &[JValue],
        tools: Option<&JValue>,
        add_generation_prompt: bool,
        extra: &serde_json::Map<String, Value>,
    ) -> std::result::Result<String, Problem> {
        let mut context: Vec<(&str, JValue)> = self
            .globals
            .iter()
            .filter(|(k, _)| !extra.contains_key(*k))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        context.extend(extra.iter().map(|(k, v)| (k.as_str(), JValue::from_serialize(v))));
        context.push(("messages", JValue::from(messages.to_vec())));
        context.push(("add_generation_prompt", JValue::from(add_generation_prompt)));
        if let Some(tools) = tools {
            context.push(("tools", tools.clone()));
        }
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Problem::new("template_error", "", e.to_string()))?;
        template.render(JValue::from_iter(context)).map_err(|e| {
            let message = match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("raise_exception").to_string(),
                _ => format!("{e:#}"),
            };
            Problem::new("template_error", "", format!("the chat template rejected the conversation: {message}"))
                .hint("fix the record so the template accepts it (e.g. alternate user/assistant turns), or choose another `template`")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_matches_json_dumps() {
        let v: Value = serde_json::from_str(r#"{"a": [1, 2.0, "é\n"], "b": {}, "c": null}"#).expect("json");
        let mut out = String::new();
        python_json(&v, None, 0, &mut out);
        assert_eq!(out, r#"{"a": [1, 2.0, "é\n"], "b": {}, "c": null}"#);
        let mut out = String::new();
        python_json(&v, Some(2), 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    2.0,\n    \"é\\n\"\n  ],\n  \"b\": {},\n  \"c\": null\n}"
        );
    }

    #[test]
    fn strftime_formats_like_python() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        assert_eq!(
            strftime(1_722_000_309, "%d %B %Y %a %H:%M:%S %j %%"),
            "26 July 2024 Fri 13:25:09 208 %"
        );
    }

    #[test]
    fn generation_tags_render_their_body() {
        let src = "{% for m in messages %}{% generation %}{{ m.content }}{%- endgeneration %}{% endfor %}";
        let t = JinjaTemplate::new(src, &SpecialTokens::default()).expect("compiles");
        let msgs = vec![serde_json::json!({"role": "user", "content": "hi"})];
        assert_eq!(
            t.render(&msgs, None, false, &Default::default()).expect("renders"),
            "hi"
        );
    }

    #[test]
    fn raise_exception_becomes_the_problem_message() {
        let t = JinjaTemplate::new(
            "{{ raise_exception('roles must alternate') }}",
            &SpecialTokens::default(),
        )
        .expect("compiles");
        let p = t.render(&[], None, false, &Default::default()).expect_err("raises");
        assert!(p.message.contains("roles must alternate"), "{p}");
    }
}
