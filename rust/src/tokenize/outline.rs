//! A tokenizer.json parsed without its BPE merges. Everything sftpack reads from the file itself
//! (vocabulary, added tokens, normalizer and pre-tokenizer settings) is there; the merges (as
//! many as the vocabulary, ~40% of parsing a 150k-vocabulary file into values) are read only by
//! the tokenizer engines, from the text.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `text` as JSON, leaving out `model.merges`.
pub(crate) fn parse_without_merges(text: &str) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = deserializer.deserialize_map(Level::Top)?;
    deserializer.end()?;
    Ok(value)
}

#[derive(Clone, Copy)]
enum Level {
    /// The file's object: its `model` is read at the next level.
    Top,
    /// The `model` object: its `merges` are skipped.
    Model,
}

impl<'de> Visitor<'de> for Level {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match (self, key.as_str()) {
                (Level::Top, "model") => {
                    let model = map.next_value_seed(Level::Model)?;
                    out.insert(key, model);
                }
                (Level::Model, "merges") => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    let value = map.next_value()?;
                    out.insert(key, value);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

impl<'de> DeserializeSeed<'de> for Level {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_the_merges_is_parsed() {
        let text = r#"{"version": "1.0", "added_tokens": [{"id": 3, "content": "<s>"}],
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]},
            "merges": "kept: only the model's are left out"}"#;
        let mut expected: Value = serde_json::from_str(text).expect("json");
        expected["model"].as_object_mut().expect("model").remove("merges");
        assert_eq!(parse_without_merges(text).expect("parses"), expected);
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(parse_without_merges(r#"{"model": {"merges": [}"#).is_err());
        assert!(parse_without_merges("[1, 2]").is_err());
        assert!(parse_without_merges(r#"{"a": 1} trailing"#).is_err());
        assert!(
            parse_without_merges(r#"{"model": null}"#).is_err(),
            "a model is an object"
        );
    }
}
