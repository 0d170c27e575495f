//! Stamps the engine with a build id: a hash of its sources, its built-in templates and the
//! locked dependency versions. A pack's key includes it, so a pack made by another engine build
//! (which may tokenize, mask or pack differently) is never taken as up to date.

use std::path::{Path, PathBuf};

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_below(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// FNV-1a, 64 bits: enough to tell builds apart, and needs no dependency.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let mut files = Vec::new();
    for dir in ["src", "templates"] {
        files_below(&root.join(dir), &mut files);
        println!("cargo:rerun-if-changed={dir}");
    }
    for lock in [root.join("Cargo.lock"), root.join("../Cargo.lock")] {
        if lock.is_file() {
            println!("cargo:rerun-if-changed={}", lock.display());
            files.push(lock);
        }
    }
    files.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap_or(file);
        hash = fnv1a(hash, relative.to_string_lossy().as_bytes());
        hash = fnv1a(hash, &std::fs::read(file).unwrap_or_default());
    }
    println!("cargo:rustc-env=SFTPACK_ENGINE_BUILD={hash:016x}");
}
