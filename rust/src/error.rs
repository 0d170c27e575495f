//! Errors of the engine. Two kinds exist and never mix:
//! - [`Error`]: a job cannot run at all (a missing file, a broken tokenizer, a bad template).
//! - [`Problem`]: one record is unusable; it is reported with its location and the job goes on.

use std::path::PathBuf;

/// A failure that stops a whole job. Every message says what happened, where, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Tokenizer(String),
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Output(String),
    #[error("interrupted; run the same command again to resume from the last completed window")]
    Interrupted,
    /// `--overlong error`: a conversation longer than max_length stops the job.
    #[error("{location}: the conversation is too long ({detail}), and --overlong error stops the run; nothing was written\nhint: raise --max-length, or pass --overlong drop (skip and count such records) or --overlong truncate")]
    Overlong { location: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why one record cannot be used: a stable `kind` slug (for counting and for tools), the JSON
/// path of the field at fault, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub kind: &'static str,
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hint: String,
}

impl Problem {
    pub fn new(kind: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            kind,
            path: path.into(),
            message: message.into(),
            hint: String::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.kind, self.message)?;
        } else {
            write!(f, "{} at {}: {}", self.kind, self.path, self.message)?;
        }
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}
