//! What loading a tokenizer for the 1.0 engine computes once per tokenizer.json and engine
//! build: the canonical form the 1.0 reader takes (rewriting a 150k vocabulary costs ~0.6 s), and
//! whether 1.0 agreed with 0.23 on the probe texts (which needs 0.23 loaded, ~0.4 s). Kept on
//! disk so the next job over the same tokenizer starts in a fraction of that.
//!
//! Entries are keyed by the tokenizer.json's sha256 and the engine build (sources and locked
//! dependency versions), so a changed tokenizer or engine never reads a stale entry. The cache is
//! an optimisation only: an unreadable, unwritable or corrupt entry means the work is redone.
//!
//! Where: `$SFTPACK_CACHE_DIR`, else `$XDG_CACHE_HOME/sftpack`, else `~/.cache/sftpack`;
//! `SFTPACK_CACHE_DIR=off` turns it off.

use std::path::PathBuf;

use super::hex_sha256;
use crate::ENGINE_BUILD;

/// One tokenizer.json's entry (a directory named by its key).
#[derive(Clone)]
pub(crate) struct Entry {
    dir: Option<PathBuf>,
}

fn cache_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SFTPACK_CACHE_DIR") {
        return (dir != "off" && !dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("sftpack"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("sftpack"))
}

impl Entry {
    /// The entry for the tokenizer.json whose sha256 is `sha256`.
    pub(crate) fn for_tokenizer(sha256: &str) -> Self {
        let key = hex_sha256(format!("{ENGINE_BUILD}\0{sha256}").as_bytes());
        Entry {
            dir: cache_root().map(|root| root.join("tokenizers").join(&key[..32])),
        }
    }

    pub(crate) fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.as_ref()?.join(name)).ok()
    }

    /// Writes `name` whole or not at all (a temporary file renamed into place), so concurrent
    /// jobs never read half an entry. Failures are ignored: the cache only saves time.
    pub(crate) fn write(&self, name: &str, text: &str) {
        let Some(dir) = &self.dir else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, dir.join(name)));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }
}
