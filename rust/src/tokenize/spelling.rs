//! Token starts without offsets: the 1.0 engine returns ids only, and masks need where each
//! token starts in the rendered text. Each id spells a fixed run of bytes of the text it was
//! encoded from, so walking the ids over the text finds every start. The walk accepts only when
//! the spellings rebuild the text exactly; anything else (a normalizer that changed the text, a
//! tokenizer quirk not modelled here) returns None and the caller asks tokenizers 0.23 instead.
//!
//! Starts follow 0.23's offsets: a token that begins inside a UTF-8 character (byte-level BPE
//! pieces, SentencePiece byte fallback) starts where that character starts.

use serde_json::Value;

/// Why token starts cannot be derived for a tokenizer at all (said once in the log and report).
pub(crate) type Unsupported = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A vocabulary piece: its spelling is matched byte for byte.
    Piece,
    /// An added token, matched on the raw text; `lstrip`/`rstrip` swallow whitespace around it.
    Added { lstrip: bool, rstrip: bool },
}

/// What every id spells, and the one liberty a tokenizer takes with the text: a space it
/// prepends at the start of a segment (SentencePiece's "▁", byte-level `add_prefix_space`).
pub(crate) struct Spellings {
    bytes: Vec<u8>,
    /// `bytes[ends[id - 1]..ends[id]]` is the spelling of `id` (`ends[-1]` = 0).
    ends: Vec<usize>,
    kinds: Vec<Kind>,
    /// Added tokens that are vocabulary pieces too (Gemma's whitespace runs): the model can
    /// produce them from text the added-token matcher never saw, spelled as pieces.
    as_piece: std::collections::HashMap<u32, Vec<u8>>,
    prepends_space: bool,
}

/// The inverse of byte-level BPE's byte → printable character table.
fn byte_level_decoder() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = std::collections::HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

/// `<0x0A>`-style byte-fallback pieces.
fn byte_fallback(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok()).flatten()
}

fn components<'a>(value: Option<&'a Value>, list_key: &str) -> Vec<&'a Value> {
    match value {
        Some(v) if v.get("type").and_then(Value::as_str) == Some("Sequence") => v
            .get(list_key)
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default(),
        Some(Value::Null) | None => Vec::new(),
        Some(v) => vec![v],
    }
}

fn has_type(items: &[&Value], kind: &str) -> bool {
    items
        .iter()
        .any(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Byte-level BPE: pieces are bytes written as printable characters.
    ByteLevel,
    /// SentencePiece-style: "▁" stands for a space, `<0xNN>` for a byte.
    Metaspace,
    /// Pieces are the text itself.
    Literal,
}

impl Spellings {
    /// Reads what each id spells from a tokenizer.json; Err says why starts can't be derived.
    pub(crate) fn from_tokenizer_json(json: &Value) -> Result<Self, Unsupported> {
        let model = json.get("model").ok_or("tokenizer.json has no model")?;
        let model_type = model.get("type").and_then(Value::as_str).unwrap_or("BPE");
        if model_type != "BPE" {
            return Err(format!(
                "token starts are derived for BPE models only, not {model_type}"
            ));
        }
        for affix in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if model.get(affix).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                return Err(format!("the BPE model has a {affix}"));
            }
        }
        let processors = components(json.get("post_processor"), "processors");
        let trims = processors.iter().any(|p| {
            p.get("type").and_then(Value::as_str) == Some("ByteLevel")
                && p.get("trim_offsets").and_then(Value::as_bool) == Some(true)
        });
        if trims {
            return Err("the post-processor trims offsets (ByteLevel trim_offsets)".into());
        }
        let pre = components(json.get("pre_tokenizer"), "pretokenizers");
        let normalizers = components(json.get("normalizer"), "normalizers");
        let replaces_spaces = normalizers.iter().any(|n| {
            n.get("type").and_then(Value::as_str) == Some("Replace")
                && n.pointer("/pattern/String").and_then(Value::as_str) == Some(" ")
                && n.get("content").and_then(Value::as_str) == Some("\u{2581}")
        });
        let style = if has_type(&pre, "ByteLevel") {
            Style::ByteLevel
        } else if has_type(&pre, "Metaspace") || replaces_spaces {
            Style::Metaspace
        } else {
            Style::Literal
        };
        let prepends_space = match style {
            Style::Metaspace => true,
            Style::ByteLevel => pre.iter().any(|p| {
                p.get("type").and_then(Value::as_str) == Some("ByteLevel")
                    && p.get("add_prefix_space").and_then(Value::as_bool) == Some(true)
            }),
            Style::Literal => false,
        };
        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or("the BPE model has no vocab")?;
        let added = json.get("added_tokens").and_then(Value::as_array);
        let size = vocab
            .values()
            .filter_map(Value::as_u64)
            .chain(added.into_iter().flatten().filter_map(|t| t.get("id")?.as_u64()))
            .max()
            .map_or(0, |m| m as usize + 1);
        let decoder = byte_level_decoder();
        let mut spellings: Vec<Option<(Vec<u8>, Kind)>> = vec![None; size];
        let mut as_piece = std::collections::HashMap::new();
        for (token, id) in vocab {
            let Some(id) = id.as_u64() else { continue };
            let bytes = match style {
                Style::ByteLevel => token
                    .chars()
                    .map(|c| decoder.get(&c).copied())
                    .collect::<Option<Vec<u8>>>(),
                Style::Metaspace => {
                    Some(byte_fallback(token).map_or_else(|| token.replace('\u{2581}', " ").into_bytes(), |b| vec![b]))
                }
                Style::Literal => Some(token.as_bytes().to_vec()),
            };
            // A piece that spells no bytes (say an unused byte-level entry) can't appear in a walk.
            if let Some(bytes) = bytes {
                spellings[id as usize] = Some((bytes, Kind::Piece));
            }
        }
        for token in added.into_iter().flatten() {
            let (Some(id), Some(content)) = (
                token.get("id").and_then(Value::as_u64),
                token.get("content").and_then(Value::as_str),
            ) else {
                continue;
            };
            let flag = |key: &str| token.get(key).and_then(Value::as_bool).unwrap_or(false);
            // A normalized added token is matched on the normalized text, where "▁" was a space.
            let spelled = if style == Style::Metaspace && flag("normalized") {
                content.replace('\u{2581}', " ")
            } else {
                content.to_string()
            };
            let kind = Kind::Added {
                lstrip: flag("lstrip"),
                rstrip: flag("rstrip"),
            };
            if let Some((piece, Kind::Piece)) = spellings[id as usize].take() {
                as_piece.insert(id as u32, piece);
            }
            spellings[id as usize] = Some((spelled.into_bytes(), kind));
        }
        let mut table = Spellings {
            bytes: Vec::new(),
            ends: Vec::with_capacity(size),
            kinds: Vec::with_capacity(size),
            as_piece,
            prepends_space,
        };
        for entry in spellings {
            // An id with no spelling gets an empty one that never matches (see `walk`).
            let (bytes, kind) = entry.unwrap_or((Vec::new(), Kind::Piece));
            table.bytes.extend_from_slice(&bytes);
            table.ends.push(table.bytes.len());
            table.kinds.push(kind);
        }
        Ok(table)
    }

    fn spelling(&self, id: u32) -> Option<(&[u8], Kind)> {
        let id = id as usize;
        let end = *self.ends.get(id)?;
        let start = if id == 0 { 0 } else { self.ends[id - 1] };
        Some((&self.bytes[start..end], self.kinds[id]))
    }

    /// Where each token of `ids` starts in `text` (byte offsets, as 0.23 reports them), or None
    /// when the ids do not spell `text` exactly.
    pub(crate) fn starts(&self, ids: &[u32], text: &str) -> Option<Vec<usize>> {
        let bytes = text.as_bytes();
        let whitespace_end = |mut at: usize| {
            while let Some(c) = text
                .get(at..)
                .and_then(|rest| rest.chars().next())
                .filter(|c| c.is_whitespace())
            {
                at += c.len_utf8();
            }
            at
        };
        let mut starts = Vec::with_capacity(ids.len());
        let mut pos = 0;
        let mut segment_start = true;
        for &id in ids {
            let (mut spelled, mut kind) = self.spelling(id)?;
            if spelled.is_empty() {
                return None;
            }
            let rest = &bytes[pos..];
            if let (Kind::Added { .. }, Some(piece)) = (kind, self.as_piece.get(&id)) {
                if !rest.starts_with(spelled) {
                    (spelled, kind) = (piece.as_slice(), Kind::Piece);
                }
            }
            match kind {
                Kind::Added { lstrip, rstrip } => {
                    let from = if lstrip { whitespace_end(pos) } else { pos };
                    if !bytes[from..].starts_with(spelled) {
                        return None;
                    }
                    starts.push(pos);
                    pos = from + spelled.len();
                    if rstrip {
                        pos = whitespace_end(pos);
                    }
                    segment_start = true;
                    continue;
                }
                Kind::Piece if rest.starts_with(spelled) => {
                    starts.push(char_start(text, pos));
                    pos += spelled.len();
                }
                // A space the tokenizer put in front of the segment, not in the text: it
                // starts where the segment does.
                Kind::Piece
                    if segment_start
                        && self.prepends_space
                        && spelled[0] == b' '
                        && rest.first() != Some(&b' ')
                        && rest.starts_with(&spelled[1..]) =>
                {
                    starts.push(pos);
                    pos += spelled.len() - 1;
                }
                Kind::Piece => return None,
            }
            segment_start = false;
        }
        (pos == bytes.len()).then_some(starts)
    }
}

/// The start of the character that byte `at` belongs to.
fn char_start(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn byte_level() -> Spellings {
        // "Ġ" is the byte-level character for a space; "ä½ł" spells "你" (3 bytes).
        Spellings::from_tokenizer_json(&json!({
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
            "model": {"type": "BPE", "vocab": {"hi": 0, "Ġthere": 1, "ä½": 2, "ł": 3, "\n": 4, "Ċ": 5}},
            "added_tokens": [{"id": 6, "content": "<|end|>", "lstrip": false, "rstrip": true, "normalized": false}]
        }))
        .expect("byte-level BPE is supported")
    }

    #[test]
    fn ids_that_spell_the_text_give_byte_starts() {
        assert_eq!(byte_level().starts(&[0, 1], "hi there"), Some(vec![0, 2]));
    }

    #[test]
    fn a_token_inside_a_character_starts_where_the_character_does() {
        assert_eq!(byte_level().starts(&[0, 2, 3], "hi你"), Some(vec![0, 2, 2]));
    }

    #[test]
    fn an_rstrip_added_token_swallows_the_whitespace_after_it() {
        assert_eq!(byte_level().starts(&[6, 0], "<|end|>\n hi"), Some(vec![0, 9]));
    }

    #[test]
    fn ids_that_do_not_spell_the_text_are_refused() {
        let spellings = byte_level();
        assert_eq!(spellings.starts(&[0], "hi there"), None, "text left over");
        assert_eq!(spellings.starts(&[1], "hi"), None, "wrong piece");
        assert_eq!(spellings.starts(&[0, 99], "hi"), None, "unknown id");
    }

    #[test]
    fn sentencepiece_prepends_a_space_only_at_a_segment_start() {
        let spellings = Spellings::from_tokenizer_json(&json!({
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "model": {"type": "BPE", "byte_fallback": true, "vocab": {"▁hi": 0, "▁there": 1, "<0x0A>": 2, "hi": 3}},
            "added_tokens": [{"id": 4, "content": "<s>", "lstrip": false, "rstrip": false, "normalized": false}]
        }))
        .expect("SentencePiece-style BPE is supported");
        assert_eq!(spellings.starts(&[0, 1, 2], "hi there\n"), Some(vec![0, 2, 8]));
        assert_eq!(spellings.starts(&[4, 0], "<s>hi"), Some(vec![0, 3]));
        assert_eq!(
            spellings.starts(&[3, 0], "hihi"),
            None,
            "no prepended space mid-segment"
        );
    }

    #[test]
    fn offsets_that_0_23_trims_are_not_derived() {
        let refused = Spellings::from_tokenizer_json(&json!({
            "post_processor": {"type": "ByteLevel", "trim_offsets": true},
            "model": {"type": "BPE", "vocab": {}}
        }));
        assert!(refused.is_err());
    }
}
