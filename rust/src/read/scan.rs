//! A streaming splitter for files of JSON values: the elements of one top-level array, or
//! top-level values one after another. It only finds where each value starts and ends (strings,
//! escapes and nesting); parsing happens later, per record, so a bad record never stops the file
//! unless its framing is broken.

use std::io::BufRead;
use std::path::PathBuf;

use super::{decode_utf8, RawRecord};
use crate::error::{Error, Problem, Result};

pub struct ValueScanner {
    file: u32,
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    /// Current line (1-based) of the next unread byte.
    line: u64,
    /// `Some(n)` once the file turned out to be an array; n = next element's index.
    array_index: Option<u64>,
    started: bool,
    finished: bool,
    value: Vec<u8>,
    peeked: Option<u8>,
}

enum Step {
    Record(RawRecord),
    End,
}

impl ValueScanner {
    pub fn new(file: u32, path: PathBuf, reader: Box<dyn BufRead + Send>) -> Self {
        ValueScanner {
            file,
            path,
            reader,
            line: 1,
            array_index: None,
            started: false,
            finished: false,
            value: Vec::new(),
            peeked: None,
        }
    }

    fn next_byte(&mut self) -> Result<Option<u8>> {
        if let Some(b) = self.peeked.take() {
            return Ok(Some(b));
        }
        let buf = self.reader.fill_buf().map_err(|e| Error::io(&self.path, e))?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        self.reader.consume(1);
        if b == b'\n' {
            self.line += 1;
        }
        Ok(Some(b))
    }

    fn skip_whitespace(&mut self) -> Result<Option<u8>> {
        loop {
            match self.next_byte()? {
                Some(b) if b.is_ascii_whitespace() => continue,
                other => return Ok(other),
            }
        }
    }

    fn framing_problem(&mut self, line: u64, kind: &'static str, message: String) -> Step {
        self.finished = true;
        Step::Record(RawRecord {
            file: self.file,
            line,
            index: self.array_index,
            text: Err(Problem::new(kind, "", message)
                .hint("the rest of this file cannot be split into records; check it with `python -m json.tool FILE`")),
        })
    }

    fn start(&mut self) -> Result<Option<u8>> {
        self.started = true;
        let mut first = self.skip_whitespace()?;
        if first == Some(0xEF) {
            // UTF-8 byte order mark.
            self.next_byte()?;
            self.next_byte()?;
            first = self.skip_whitespace()?;
        }
        if first == Some(b'[') {
            self.array_index = Some(0);
            return self.skip_whitespace();
        }
        Ok(first)
    }

    fn step(&mut self) -> Result<Step> {
        let first = if self.started {
            self.skip_whitespace()?
        } else {
            self.start()?
        };
        let Some(mut first) = first else {
            if self.array_index.is_some() {
                let line = self.line;
                return Ok(self.framing_problem(
                    line,
                    "truncated_json",
                    "the JSON array is never closed with `]`".into(),
                ));
            }
            return Ok(Step::End);
        };
        if let Some(index) = self.array_index {
            if first == b']' {
                return self.expect_end();
            }
            if index > 0 {
                if first != b',' {
                    let line = self.line;
                    return Ok(self.framing_problem(
                        line,
                        "invalid_json",
                        format!("expected `,` or `]` between array elements, found `{}`", first as char),
                    ));
                }
                match self.skip_whitespace()? {
                    Some(b) => first = b,
                    None => {
                        let line = self.line;
                        return Ok(self.framing_problem(
                            line,
                            "truncated_json",
                            "the JSON array ends after a `,`".into(),
                        ));
                    }
                }
            }
        }
        let line = self.line;
        self.value.clear();
        let complete = self.read_value(first)?;
        if !complete {
            return Ok(self.framing_problem(line, "truncated_json", "the file ends inside this record".into()));
        }
        let index = self.array_index;
        if let Some(i) = self.array_index.as_mut() {
            *i += 1;
        }
        Ok(Step::Record(RawRecord {
            file: self.file,
            line,
            index,
            text: decode_utf8(&self.value).map(str::to_string),
        }))
    }

    /// Reads one value starting with `first` into `self.value`; false if the file ended inside it.
    fn read_value(&mut self, first: u8) -> Result<bool> {
        self.value.push(first);
        if first != b'{' && first != b'[' && first != b'"' {
            return self.read_scalar();
        }
        let mut depth: u32 = u32::from(first != b'"');
        let mut in_string = first == b'"';
        let mut escaped = false;
        while depth > 0 || in_string {
            let Some(b) = self.next_byte()? else {
                return Ok(false);
            };
            self.value.push(b);
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => depth -= 1,
                    _ => {}
                }
            }
        }
        Ok(true)
    }

    fn read_scalar(&mut self) -> Result<bool> {
        loop {
            match self.next_byte()? {
                None => return Ok(true),
                Some(b) if b.is_ascii_whitespace() || matches!(b, b',' | b']' | b'{' | b'[') => {
                    self.peeked = Some(b);
                    return Ok(true);
                }
                Some(b) => self.value.push(b),
            }
        }
    }

    fn expect_end(&mut self) -> Result<Step> {
        self.finished = true;
        match self.skip_whitespace()? {
            None => Ok(Step::End),
            Some(b) => {
                let line = self.line;
                Ok(self.framing_problem(
                    line,
                    "trailing_data",
                    format!("unexpected `{}` after the closing `]` of the array", b as char),
                ))
            }
        }
    }
}

impl Iterator for ValueScanner {
    type Item = Result<RawRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        match self.step() {
            Ok(Step::Record(r)) => Some(Ok(r)),
            Ok(Step::End) => {
                self.finished = true;
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> Vec<(u64, Option<u64>, std::result::Result<String, &'static str>)> {
        let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
        ValueScanner::new(0, PathBuf::from("t.json"), reader)
            .map(|r| {
                let r = r.expect("no io error");
                (r.line, r.index, r.text.map_err(|p| p.kind))
            })
            .collect()
    }

    #[test]
    fn array_elements_keep_their_line_and_index() {
        let got = scan("\u{feff}[\n {\"a\": \"x]}\"},\n\n {\"b\": [1, {\"c\": 2}]}\n]\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (2, Some(0), Ok("{\"a\": \"x]}\"}".into())));
        assert_eq!(got[1], (4, Some(1), Ok("{\"b\": [1, {\"c\": 2}]}".into())));
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let got = scan(r#"[{"a": "say \"hi\" \\"}]"#);
        assert_eq!(got[0].2, Ok(r#"{"a": "say \"hi\" \\"}"#.into()));
    }

    #[test]
    fn objects_one_after_another() {
        let got = scan("{\"a\": 1}\n{\n  \"b\": 2\n}\n");
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(got.iter().all(|g| g.1.is_none()));
    }

    #[test]
    fn broken_framing_is_reported_once_then_stops() {
        let got = scan("[{\"a\": 1} {\"b\": 2}]");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, Err("invalid_json"));
        let got = scan("[{\"a\": 1}, {\"b\": ");
        assert_eq!(got.last().map(|g| g.2.clone()), Some(Err("truncated_json")));
        let got = scan("[{\"a\": 1}] x");
        assert_eq!(got.last().map(|g| g.2.clone()), Some(Err("trailing_data")));
    }

    #[test]
    fn scalars_are_records_too() {
        let got = scan("[1, true, \"s\"]");
        assert_eq!(
            got.iter().map(|g| g.2.clone().unwrap_or_default()).collect::<Vec<_>>(),
            vec!["1", "true", "\"s\""]
        );
    }

    #[test]
    fn empty_array_has_no_records() {
        assert!(scan("[ ]").is_empty());
        assert!(scan("").is_empty());
    }
}
