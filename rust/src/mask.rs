//! Mask: which characters of a rendered conversation are trained, and from them which tokens.
//!
//! For a Jinja template, message i (trained by default if it is an assistant message, or by its
//! `loss` flag) covers:
//!
//! ```text
//! start = len(render(messages[:i], add_generation_prompt = i is an assistant))
//! end   = len(render(messages[:i+1]))  minus trailing whitespace
//!
//!  <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n Hello!<|im_end|> \n
//!  '------------- prompt (untrained) -------------------' '--- trained ---'
//! ```
//!
//! so an assistant turn is trained with its end-of-turn marker (the model learns to stop) but
//! without the header the generation prompt already supplies. A token is trained iff its first
//! byte lies in a trained span. Templates that are not prefix-stable (a prefix renders
//! differently from the start of the full rendering, e.g. reasoning removed from earlier turns)
//! fall back to locating the message content in the full rendering. Templates that append the
//! assistant header even without add_generation_prompt (the first Llama-3 template) have that
//! header removed from the end of each prefix before comparing.

use std::ops::Range;

use serde_json::{Map, Value};

use crate::error::Problem;
use crate::schema::{Conversation, Role};
use crate::template::JinjaTemplate;
use crate::tokenize::TokenizerBundle;

/// The full rendering, its trained byte spans, and the byte ranges of message content.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub trained: Vec<Range<usize>>,
    pub content: Vec<Range<usize>>,
}

/// What a template does at the end of a conversation that ends with an assistant message.
pub struct TemplateTraits {
    /// The assistant header that the template appends whether or not a generation prompt was
    /// asked for; empty for well-behaved templates.
    unconditional_prompt: String,
    /// The special token that closes an assistant turn (`<|im_end|>`, `<|eot_id|>`, ...), if the
    /// template writes one right after the content.
    end_of_turn: Option<String>,
}

fn probe(role: Role, content: &str) -> Value {
    serde_json::json!({"role": role.as_str(), "content": content})
}

impl TemplateTraits {
    pub fn detect(template: &JinjaTemplate, tokenizer: &TokenizerBundle) -> Self {
        let none = Map::new();
        let render = |msgs: &[Value], gen| template.render(msgs, None, gen, &none).ok();
        let pair = [probe(Role::User, "X1"), probe(Role::Assistant, "Y1")];
        let unconditional = matches!((render(&pair, false), render(&pair, true)), (Some(a), Some(b)) if a == b);
        let mut unconditional_prompt = String::new();
        if unconditional {
            // Both end with "<end of turn><assistant header>": take the common tail of two
            // renderings that end with different user texts, then drop its first special token.
            let one = render(&[probe(Role::User, "X1")], true);
            let three = render(
                &[
                    probe(Role::User, "X1"),
                    probe(Role::Assistant, "Y1"),
                    probe(Role::User, "X2"),
                ],
                true,
            );
            if let (Some(one), Some(three)) = (one, three) {
                let tail = common_suffix(&one, &three);
                let trimmed = tail.trim_start();
                if let Some(first) = tokenizer.special_tokens_in(trimmed).first().filter(|r| r.start == 0) {
                    unconditional_prompt = trimmed[first.end..].to_string();
                }
            }
        }
        let end_of_turn = render(&pair, false).and_then(|text| {
            let after = text.find("Y1")? + 2;
            let first = tokenizer
                .special_tokens_in(&text[after..])
                .into_iter()
                .next()
                .filter(|r| r.start == 0)?;
            Some(text[after + first.start..after + first.end].to_string())
        });
        TemplateTraits {
            unconditional_prompt,
            end_of_turn,
        }
    }
}

fn common_suffix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a.bytes().rev().zip(b.bytes().rev()).take_while(|(x, y)| x == y).count();
    let mut start = a.len() - n;
    while !a.is_char_boundary(start) {
        start += 1;
    }
    &a[start..]
}

struct Renderer<'a> {
    template: &'a JinjaTemplate,
    traits: &'a TemplateTraits,
    messages: Vec<Value>,
    /// `messages` and the tools as template values, converted once for every render.
    prepared: Vec<minijinja::Value>,
    prepared_tools: Option<minijinja::Value>,
    tools: Option<&'a Value>,
    kwargs: &'a Map<String, Value>,
    /// The whole conversation's rendering, once made: a conversation's last message (usually a
    /// trained assistant reply) needs render(messages[:n]) again, which is this.
    whole: std::cell::OnceCell<String>,
}

impl<'a> Renderer<'a> {
    fn new(
        template: &'a JinjaTemplate,
        traits: &'a TemplateTraits,
        conversation: &'a Conversation,
        kwargs: &'a Map<String, Value>,
    ) -> Self {
        let messages: Vec<Value> = conversation.messages.iter().map(|m| m.to_template_value()).collect();
        Renderer {
            template,
            traits,
            prepared: messages.iter().map(minijinja::Value::from_serialize).collect(),
            prepared_tools: conversation.tools.as_ref().map(minijinja::Value::from_serialize),
            messages,
            tools: conversation.tools.as_ref(),
            kwargs,
            whole: std::cell::OnceCell::new(),
        }
    }

    /// render(messages, add_generation_prompt = false), kept for later prefix renders.
    fn render_whole(&self) -> Result<String, Problem> {
        if let Some(text) = self.whole.get() {
            return Ok(text.clone());
        }
        let text = self.render_uncached(self.prepared.len(), false)?;
        Ok(self.whole.get_or_init(|| text).clone())
    }

    fn render(&self, n: usize, generation_prompt: bool) -> Result<String, Problem> {
        if n == self.prepared.len() && !generation_prompt {
            return self.render_whole();
        }
        self.render_uncached(n, generation_prompt)
    }

    fn render_uncached(&self, n: usize, generation_prompt: bool) -> Result<String, Problem> {
        self.template.render_prepared(
            &self.prepared[..n],
            self.prepared_tools.as_ref(),
            generation_prompt,
            self.kwargs,
        )
    }

    /// Whether the template leaves message `i` out of the whole rendering `text` (Mistral v2
    /// drops tool calls before the last user turn): changing what the message says changes
    /// nothing. Such a message has no tokens to train.
    fn leaves_out(&self, i: usize, text: &str) -> bool {
        const PROBE: &str = "\u{E000}sftpack-probe\u{E000}";
        let mut messages = self.messages.clone();
        let Some(Value::Object(message)) = messages.get_mut(i) else {
            return false;
        };
        if message
            .get("content")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty())
        {
            message.insert("content".into(), Value::String(PROBE.into()));
        }
        if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
            for call in calls {
                if let Some(Value::Object(function)) = call.get_mut("function") {
                    function.insert("name".into(), Value::String(PROBE.into()));
                }
            }
        }
        self.template
            .render(&messages, self.tools, false, self.kwargs)
            .is_ok_and(|probed| probed == text)
    }

    /// render(messages[:n]) without the unconditional assistant header.
    fn render_closed(&self, n: usize) -> Result<String, Problem> {
        let mut text = self.render(n, false)?;
        let tail = &self.traits.unconditional_prompt;
        if !tail.is_empty() && text.ends_with(tail.as_str()) {
            text.truncate(text.len() - tail.len());
        }
        Ok(text)
    }
}

/// Renders the conversation and finds the trained spans (see the module docs).
pub fn render_jinja(
    template: &JinjaTemplate,
    traits: &TemplateTraits,
    tokenizer: &TokenizerBundle,
    conversation: &Conversation,
    kwargs: &Map<String, Value>,
) -> Result<Rendered, Problem> {
    let renderer = Renderer::new(template, traits, conversation, kwargs);
    let text = renderer.render_whole()?;
    let trained = match trained_spans(&renderer, &text, conversation, traits, tokenizer) {
        Ok(trained) => trained,
        Err(problem) => {
            spans_around_tools_block(template, traits, tokenizer, conversation, kwargs, &text).ok_or(problem)?
        }
    };
    let content = content_ranges(&text, conversation, tokenizer);
    Ok(Rendered { text, trained, content })
}

/// Each trained message's span: by the prefix rule, else located in the full rendering.
fn trained_spans(
    renderer: &Renderer<'_>,
    text: &str,
    conversation: &Conversation,
    traits: &TemplateTraits,
    tokenizer: &TokenizerBundle,
) -> Result<Vec<Range<usize>>, Problem> {
    let mut trained = Vec::new();
    let mut cursor = 0;
    for (i, message) in conversation.messages.iter().enumerate() {
        if !message.trained() {
            continue;
        }
        let start = renderer
            .render(i, message.role == Role::Assistant)
            .ok()
            .filter(|prefix| text.starts_with(prefix.as_str()) && prefix.len() >= cursor)
            .map(|prefix| prefix.len())
            .or_else(|| generation_prompt_divergence(renderer, text, i, cursor, message, tokenizer));
        let end = renderer
            .render_closed(i + 1)
            .ok()
            .filter(|upto| text.starts_with(upto.as_str()))
            .map(|upto| upto.trim_end().len());
        let span = match (start, end) {
            (Some(s), Some(e)) if e > s => s..e,
            _ => match locate(text, message.text(), start, cursor, traits)
                .or_else(|| shared_prefix_span(renderer, text, i, start?))
            {
                Some(span) => span,
                None if renderer.leaves_out(i, text) => continue,
                None => {
                    return Err(Problem::new("template_error", format!("messages[{i}]"), "cannot find where the template puts this message")
                        .hint("the template rewrites this message's content; mark the record with \"loss\" flags differently or use another `template`"))
                }
            },
        };
        cursor = span.end;
        trained.push(span);
    }
    Ok(trained)
}

/// Where an assistant message starts when the generation prompt is not a prefix of the whole
/// rendering (Qwen3 with `enable_thinking: false` puts an empty think block in the prompt that
/// history turns lack): as transformers' prefix rule would put it, where the whole and the
/// generation prompt part. Only where the turns before the message render exactly as in the
/// whole; the point moves back to just after a special token or whitespace (so it never splits
/// a token such as `<tool_call>` that starts like `<think>`). For a message with content, only
/// where nothing but whitespace lies between that point and the content (the header's newline
/// stays untrained, as in a prefix-stable turn); otherwise the content is located instead.
fn generation_prompt_divergence(
    renderer: &Renderer<'_>,
    text: &str,
    i: usize,
    cursor: usize,
    message: &crate::schema::Message,
    tokenizer: &TokenizerBundle,
) -> Option<usize> {
    if message.role != Role::Assistant {
        return None;
    }
    let history = renderer
        .render_closed(i)
        .ok()
        .filter(|h| text.starts_with(h.as_str()))?;
    let prompt = renderer.render(i, true).ok()?;
    let shared = prompt.bytes().zip(text.bytes()).take_while(|(a, b)| a == b).count();
    let floor = history.len().max(cursor);
    let token_ends: Vec<usize> = tokenizer
        .special_tokens_in(&text[..shared])
        .iter()
        .map(|r| r.end)
        .collect();
    let start = (floor..=shared).rev().find(|&p| {
        text.is_char_boundary(p) && (token_ends.contains(&p) || text[..p].ends_with(|c: char| c.is_whitespace()))
    })?;
    let content = message.text().trim();
    if content.is_empty() {
        return Some(start);
    }
    let at = text.get(start..)?.find(content)? + start;
    text[start..at].trim().is_empty().then_some(start)
}

/// Mistral's v2/v3 templates put the tools block before the *last* user turn, so no prefix of
/// the conversation renders as the start of the whole, and a tool-call message has no text to
/// search for. Without tools those templates are prefix-stable: the spans are found in the
/// rendering without tools, then moved past the block that tools insert, after checking that
/// the block is the only difference between the two renderings.
fn spans_around_tools_block(
    template: &JinjaTemplate,
    traits: &TemplateTraits,
    tokenizer: &TokenizerBundle,
    conversation: &Conversation,
    kwargs: &Map<String, Value>,
    text: &str,
) -> Option<Vec<Range<usize>>> {
    conversation.tools.as_ref()?;
    let bare = Conversation {
        tools: None,
        ..conversation.clone()
    };
    let without = render_jinja(template, traits, tokenizer, &bare, kwargs).ok()?;
    let (at, inserted) = insertion(&without.text, text)?;
    without
        .trained
        .iter()
        .map(|span| match span {
            s if s.end <= at => Some(s.clone()),
            s if s.start >= at => Some(s.start + inserted..s.end + inserted),
            _ => None,
        })
        .collect()
}

/// Where `long` is `short` with one block inserted: (position, length). Where the block could
/// sit at several positions (it starts as the text after it does), the leftmost is taken.
fn insertion(short: &str, long: &str) -> Option<(usize, usize)> {
    let inserted = long.len().checked_sub(short.len())?;
    let (short, long) = (short.as_bytes(), long.as_bytes());
    let mut at = short.iter().zip(long).take_while(|(a, b)| a == b).count();
    if long.get(at + inserted..)? != short.get(at..)? {
        return None;
    }
    while at > 0 && long[at - 1] == long[at - 1 + inserted] {
        at -= 1;
    }
    Some((at, inserted))
}

/// Per message, the bytes of the rendering that are its own: its content (located in order) and,
/// for a trained message, its trained span (a reply's think block or tool call included). What
/// lies outside every message's bytes (headers, separators) the template adds. For `sftpack
/// inspect`'s tokens per role, not for training.
pub fn message_regions(rendered: &Rendered, conversation: &Conversation) -> Vec<Vec<Range<usize>>> {
    let text = &rendered.text;
    let mut spans = rendered.trained.iter().peekable();
    let mut cursor = 0;
    let mut out = Vec::with_capacity(conversation.messages.len());
    for message in &conversation.messages {
        let content = message.text().trim();
        let found = (!content.is_empty())
            .then(|| {
                text.get(cursor..)?
                    .find(content)
                    .map(|at| cursor + at..cursor + at + content.len())
            })
            .flatten();
        let mut regions: Vec<Range<usize>> = found.iter().cloned().collect();
        if message.trained() {
            let holds = |span: &&Range<usize>| match &found {
                Some(c) => span.start <= c.start && c.end <= span.end,
                None => span.start >= cursor,
            };
            regions.extend(spans.next_if(holds).cloned());
        }
        cursor = regions.iter().map(|r| r.end).max().unwrap_or(cursor);
        out.push(regions);
    }
    out
}

/// Fallback for templates that are not prefix-stable: the span starts at `from` (the end of the
/// generation prompt when known) or at the message's (trimmed) content, and ends after the first
/// end-of-turn token that follows the content (or at the content's end).
fn locate(
    text: &str,
    content: &str,
    from: Option<usize>,
    cursor: usize,
    traits: &TemplateTraits,
) -> Option<Range<usize>> {
    let needle = content.trim();
    let (start, content_end) = if needle.is_empty() {
        // Nothing to search for: only a known generation prompt end can anchor the span.
        let from = from?;
        (from, from)
    } else {
        // Without a known generation prompt end the span starts at the content, with the
        // whitespace just before it (a tokenizer may fold it into the content's first token),
        // never earlier: what lies before belongs to other messages.
        let search_from = from.unwrap_or(cursor);
        let at = text.get(search_from..)?.find(needle)? + search_from;
        let lead = text[search_from..at].len() - text[search_from..at].trim_end().len();
        (from.map_or(at - lead, |f| f.min(at)), at + needle.len())
    };
    let end = match &traits.end_of_turn {
        Some(eot) => content_end + text[content_end..].find(eot.as_str())? + eot.len(),
        None if content_end > start => content_end,
        None => return None,
    };
    Some(start..end)
}

/// Last resort: from the generation prompt to where the rendering up to this message stops
/// agreeing with the full rendering (trailing whitespace excluded).
fn shared_prefix_span(renderer: &Renderer<'_>, text: &str, i: usize, start: usize) -> Option<Range<usize>> {
    let upto = renderer.render_closed(i + 1).ok()?;
    let shared = upto.bytes().zip(text.bytes()).take_while(|(a, b)| a == b).count();
    let mut end = text[..shared].trim_end().len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (end > start).then_some(start..end)
}

/// Where message content appears in the rendering, for messages that spell special tokens (the
/// only ones for which it matters). Content the template rewrote is not found and left alone.
pub(crate) fn content_ranges(
    text: &str,
    conversation: &Conversation,
    tokenizer: &TokenizerBundle,
) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut cursor = 0;
    for message in &conversation.messages {
        let content = message.text();
        if content.is_empty() || tokenizer.special_tokens_in(content).is_empty() {
            continue;
        }
        if let Some(at) = text.get(cursor..).and_then(|rest| rest.find(content)) {
            let start = cursor + at;
            ranges.push(start..start + content.len());
            cursor = start + content.len();
        }
    }
    ranges
}

/// Token mask from token start offsets and sorted, disjoint trained spans.
pub fn token_mask(starts: &[usize], trained: &[Range<usize>]) -> Vec<u8> {
    starts
        .iter()
        .map(|&s| u8::from(trained.iter().any(|span| span.contains(&s))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_trained_iff_its_first_byte_is_in_a_span() {
        assert_eq!(token_mask(&[0, 3, 5, 9, 12], &[3..9, 12..13]), vec![0, 1, 1, 0, 1]);
    }

    #[test]
    fn common_suffix_respects_char_boundaries() {
        assert_eq!(common_suffix("aé!", "bé!"), "é!");
        assert_eq!(common_suffix("x", "y"), "");
    }

    #[test]
    fn one_inserted_block_is_found_and_nothing_else_passes_for_one() {
        assert_eq!(
            insertion("[INST]a[/INST]b", "[TOOLS]x[/TOOLS][INST]a[/INST]b"),
            Some((0, 16))
        );
        assert_eq!(insertion("q[INST]a", "q[T][INST]a"), Some((1, 3)));
        assert_eq!(insertion("abc", "abXc"), Some((2, 1)));
        assert_eq!(insertion("abc", "aXbYc"), None);
        assert_eq!(insertion("abcd", "abc"), None);
    }
}
