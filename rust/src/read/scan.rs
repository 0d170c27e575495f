//! A streaming splitter for files of JSON values: the elements of one top-level array, or
//! top-level values one after another. It only finds where each value starts and ends (strings,
//! escapes and nesting); parsing happens later, per record, so a bad record never stops the file
//! unless its framing is broken.
//!
//! A string left open (a missing `"`) would swallow the rest of the file. A JSON string cannot
//! hold a raw line break, so the scanner notices at the end of that line and, in a pretty-printed
//! file, resynchronizes at the next value that starts a line at the broken value's indentation
//! after a line ending in `,` (array elements) or `}` (values one after another):
//!
//! ```text
//!  2 |   {"messages": [{"role": "user", "content": "no closing quote}]},   <- broken here
//!  3 |   {"messages": [...]},                                             <- resumes here
//! ```
//!
//! The broken value becomes one reject that names its line range and size; where no such line
//! follows, the reject covers everything up to the end of the file, and says so.

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
    /// Bytes read on the current line so far.
    column: u64,
    /// The last non-whitespace byte of the current line, and of the line before it.
    line_last: Option<u8>,
    previous_line_last: Option<u8>,
    /// Bytes read from the file so far.
    offset: u64,
    /// Where the value being read (or the broken stretch reported) starts.
    record_start: u64,
    /// The separator before the next value was consumed while resynchronizing.
    separator_consumed: bool,
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

/// How reading one value ended.
enum ValueEnd {
    Complete,
    /// The file ended inside the value.
    Truncated,
    /// A string ran into a raw line break: a `"` is missing.
    OpenString,
}

/// Where scanning can go on after a broken value.
enum Resync {
    /// The next value starts here (its first byte is pushed back).
    NextValue,
    /// The array's closing `]` (pushed back).
    ArrayEnd,
    EndOfFile,
}

impl ValueScanner {
    pub fn new(file: u32, path: PathBuf, reader: Box<dyn BufRead + Send>) -> Self {
        ValueScanner {
            file,
            path,
            reader,
            line: 1,
            column: 0,
            line_last: None,
            previous_line_last: None,
            offset: 0,
            record_start: 0,
            separator_consumed: false,
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
        self.offset += 1;
        if b == b'\n' {
            self.line += 1;
            self.column = 0;
            self.previous_line_last = self.line_last.take();
        } else {
            self.column += 1;
            if !b.is_ascii_whitespace() {
                self.line_last = Some(b);
            }
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
        self.record_start = self.offset;
        Step::Record(RawRecord {
            file: self.file,
            line,
            index: self.array_index,
            text: Err(Problem::new(kind, "", message)
                .hint("the rest of this file cannot be split into records; check it with `python -m json.tool FILE`")),
            row: None,
            offset: self.record_start,
            unit: None,
            mapped_from: None,
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
            if index > 0 && !std::mem::take(&mut self.separator_consumed) {
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
        let column = self.column.saturating_sub(1);
        let offset = self.offset.saturating_sub(1);
        self.record_start = offset;
        self.value.clear();
        match self.read_value(first)? {
            ValueEnd::Complete => {}
            ValueEnd::Truncated => {
                return Ok(self.framing_problem(line, "truncated_json", "the file ends inside this record".into()))
            }
            ValueEnd::OpenString => return self.skip_broken_value(line, column, offset),
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
            row: None,
            offset: self.record_start,
            unit: None,
            mapped_from: None,
        }))
    }

    /// Reads one value starting with `first` into `self.value`.
    fn read_value(&mut self, first: u8) -> Result<ValueEnd> {
        self.value.push(first);
        if first != b'{' && first != b'[' && first != b'"' {
            return self.read_scalar();
        }
        let mut depth: u32 = u32::from(first != b'"');
        let mut in_string = first == b'"';
        let mut escaped = false;
        while depth > 0 || in_string {
            let Some(b) = self.next_byte()? else {
                return Ok(ValueEnd::Truncated);
            };
            self.value.push(b);
            if in_string {
                match (escaped, b) {
                    (_, b'\n') => return Ok(ValueEnd::OpenString),
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
        Ok(ValueEnd::Complete)
    }

    fn read_scalar(&mut self) -> Result<ValueEnd> {
        loop {
            match self.next_byte()? {
                None => return Ok(ValueEnd::Complete),
                Some(b) if b.is_ascii_whitespace() || matches!(b, b',' | b']' | b'{' | b'[') => {
                    self.peeked = Some(b);
                    return Ok(ValueEnd::Complete);
                }
                Some(b) => self.value.push(b),
            }
        }
    }

    /// After a string ran into a line break: skips to where the next value starts (see the
    /// module docs) and reports the skipped bytes as one reject.
    fn skip_broken_value(&mut self, line: u64, column: u64, offset: u64) -> Result<Step> {
        let broken_at = self.line - 1;
        let resync = self.resync(column)?;
        let last_line = match resync {
            Resync::EndOfFile if self.column == 0 => self.line - 1,
            Resync::EndOfFile => self.line,
            Resync::NextValue | Resync::ArrayEnd => self.line - 1,
        };
        let skipped = self.offset - offset - u64::from(!matches!(resync, Resync::EndOfFile));
        let message = format!(
            "a string on line {broken_at} is not closed (a `\"` is missing); lines {line}-{last_line} ({skipped} bytes) are skipped as one record{}",
            if matches!(resync, Resync::EndOfFile) { ", to the end of the file" } else { "" }
        );
        let index = self.array_index;
        if let Some(i) = self.array_index.as_mut() {
            *i += 1;
        }
        self.separator_consumed = true;
        self.finished = matches!(resync, Resync::EndOfFile);
        Ok(Step::Record(RawRecord {
            file: self.file,
            line,
            index,
            text: Err(Problem::new("invalid_json", "", message)
                .hint("add the missing `\"` (a string cannot hold a raw line break: write \\n), then run again")),
            row: None,
            offset: self.record_start,
            unit: None,
            mapped_from: None,
        }))
    }

    /// Reads whole lines until one starts, at indentation `column`, a value that follows a line
    /// ending in the separator of this file's layout; or the array's `]`; or the end of the file.
    fn resync(&mut self, column: u64) -> Result<Resync> {
        let separator = if self.array_index.is_some() { b',' } else { b'}' };
        loop {
            // at the start of a line: its indentation and first byte
            let first = loop {
                match self.next_byte()? {
                    None => return Ok(Resync::EndOfFile),
                    Some(b' ' | b'\t' | b'\r') => continue,
                    Some(b) => break b,
                }
            };
            if first == b'\n' {
                continue;
            }
            let indent = self.column - 1;
            if first == b'{' && indent == column && self.previous_line_last == Some(separator) {
                self.peeked = Some(first);
                return Ok(Resync::NextValue);
            }
            if first == b']' && self.array_index.is_some() && indent < column {
                self.peeked = Some(first);
                return Ok(Resync::ArrayEnd);
            }
            let mut b = first;
            while b != b'\n' {
                match self.next_byte()? {
                    None => return Ok(Resync::EndOfFile),
                    Some(next) => b = next,
                }
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
    fn an_open_string_costs_one_record_and_the_array_goes_on() {
        let text = "[\n  {\"a\": \"fine\"},\n  {\"a\": \"no end,\n   \"x\": 1},\n  {\"b\": 1,\n   \"c\": 2}\n]\n";
        let got = scan(text);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], (2, Some(0), Ok("{\"a\": \"fine\"}".into())));
        assert_eq!(
            (got[1].0, got[1].1, got[1].2.clone()),
            (3, Some(1), Err("invalid_json"))
        );
        assert_eq!(
            got[2],
            (5, Some(2), Ok("{\"b\": 1,\n   \"c\": 2}".into())),
            "lines 3-4 were one broken value"
        );
    }

    #[test]
    fn an_open_string_in_the_last_element_reaches_the_closing_bracket() {
        let got = scan("[\n  {\"a\": 1},\n  {\"a\": \"open}\n]\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].2, Err("invalid_json"));
    }

    #[test]
    fn without_a_place_to_resume_the_reject_covers_the_rest_and_says_so() {
        let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(b"[{\"a\": \"open\n, 1, 2]".to_vec()));
        let records: Vec<RawRecord> = ValueScanner::new(0, PathBuf::from("t.json"), reader)
            .map(|r| r.expect("no io error"))
            .collect();
        assert_eq!(records.len(), 1);
        let problem = records[0].text.clone().expect_err("broken");
        assert!(problem.message.contains("lines 1-2 (19 bytes)"), "{}", problem.message);
        assert!(
            problem.message.contains("to the end of the file"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn objects_one_after_another_resume_after_a_closing_brace() {
        let got = scan("{\n  \"a\": \"open\n}\n{\n  \"b\": 2\n}\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].2, Err("invalid_json"));
        assert_eq!(got[1], (4, None, Ok("{\n  \"b\": 2\n}".into())));
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
