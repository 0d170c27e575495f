//! Errors of the engine. Two kinds exist and never mix:
//! - [`Error`]: a job cannot run at all (a missing file, a broken tokenizer, a bad template).
//! - [`Problem`]: one record is unusable; it is reported with its location and the job goes on.

use std::path::PathBuf;

/// What went wrong and, where sftpack knows it, how to fix it: the hint travels as its own
/// field to Python (`SftpackError.hint`) and the command line (`hint:` on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub message: String,
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

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
    Input(Diagnostic),
    #[error("{0}")]
    Tokenizer(Diagnostic),
    #[error("{0}")]
    Template(Diagnostic),
    #[error("{0}")]
    Config(Diagnostic),
    #[error("{0}")]
    Output(Diagnostic),
    #[error("interrupted; run the same command again to resume from the last completed window")]
    Interrupted,
    /// `overlong: error`: a conversation longer than max_length stops the job.
    #[error("{}\nhint: {}", self.message(), self.fix().unwrap_or_default())]
    Overlong { location: String, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn diagnostic(message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        message: message.into(),
        hint: None,
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Error::Input(diagnostic(message))
    }

    pub fn tokenizer(message: impl Into<String>) -> Self {
        Error::Tokenizer(diagnostic(message))
    }

    pub fn template(message: impl Into<String>) -> Self {
        Error::Template(diagnostic(message))
    }

    pub fn config(message: impl Into<String>) -> Self {
        Error::Config(diagnostic(message))
    }

    pub fn output(message: impl Into<String>) -> Self {
        Error::Output(diagnostic(message))
    }

    /// The same error with how to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        if let Error::Input(d) | Error::Tokenizer(d) | Error::Template(d) | Error::Config(d) | Error::Output(d) =
            &mut self
        {
            d.hint = Some(hint.into());
        }
        self
    }

    /// What happened, without the hint.
    pub fn message(&self) -> String {
        match self {
            Error::Input(d) | Error::Tokenizer(d) | Error::Template(d) | Error::Config(d) | Error::Output(d) => {
                d.message.clone()
            }
            Error::Overlong { location, detail } => format!(
                "{location}: the conversation is too long ({detail}), and `overlong: error` stops the run; nothing was written"
            ),
            other => other.to_string(),
        }
    }

    /// How to fix it, where sftpack knows.
    pub fn fix(&self) -> Option<String> {
        match self {
            Error::Input(d) | Error::Tokenizer(d) | Error::Template(d) | Error::Config(d) | Error::Output(d) => {
                d.hint.clone()
            }
            Error::Overlong { .. } => Some(
                "raise `max_length`, or use `overlong: drop` (skip and count such records) or `overlong: truncate`"
                    .into(),
            ),
            Error::Io { .. } | Error::Interrupted => None,
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
