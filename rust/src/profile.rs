//! Profile: where a job's time goes, stage by stage, so the next bottleneck is visible.
//!
//! Each stage adds the time it took to a process-wide counter (CPU time summed over worker
//! threads, so stages run in parallel can add up to more than the wall time). A job resets the
//! counters when it starts and reads them when it ends; two jobs at once in one process would
//! share them, which only blurs these figures, never the output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Reading and framing records (the calling thread).
    Read,
    /// The Python map function, if any (the calling thread, GIL held).
    Map,
    /// JSON parsing and schema validation.
    Parse,
    /// Chat template rendering, the renders that find trained spans included.
    Render,
    /// Tokenization.
    Tokenize,
    /// Loss masks from spans.
    Mask,
    /// Packing, writing shards and rejects (the calling thread).
    Write,
    /// Waiting for the tokenizer's 1.0 engine to finish building, after rendering ahead.
    EngineWait,
}

const STAGES: usize = 8;
static NANOS: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];
/// Bytes read from the job's inputs (files and objects: hashing, framing, counting for the
/// validation split), before decompression: how many times a job reads its corpus.
static INPUT_BYTES: AtomicU64 = AtomicU64::new(0);

pub fn reset() {
    for counter in &NANOS {
        counter.store(0, Ordering::Relaxed);
    }
    INPUT_BYTES.store(0, Ordering::Relaxed);
}

/// Counts `n` bytes read from an input.
pub fn read_input(n: usize) {
    INPUT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// Input bytes read since the last reset.
pub fn input_bytes() -> u64 {
    INPUT_BYTES.load(Ordering::Relaxed)
}

/// A reader that counts what it reads as input bytes.
pub struct CountingReader<R>(pub R);

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        read_input(n);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for CountingReader<R> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}

/// Runs `work`, adding its duration to `stage`.
pub fn time<T>(stage: Stage, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = work();
    NANOS[stage as usize].fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    result
}

/// Seconds per stage since the last reset.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Profile {
    pub read: f64,
    pub map: f64,
    pub parse: f64,
    pub render: f64,
    pub tokenize: f64,
    pub mask: f64,
    pub write: f64,
    pub engine_wait: f64,
}

pub fn snapshot() -> Profile {
    let seconds = |stage: Stage| NANOS[stage as usize].load(Ordering::Relaxed) as f64 / 1e9;
    Profile {
        read: seconds(Stage::Read),
        map: seconds(Stage::Map),
        parse: seconds(Stage::Parse),
        render: seconds(Stage::Render),
        tokenize: seconds(Stage::Tokenize),
        mask: seconds(Stage::Mask),
        write: seconds(Stage::Write),
        engine_wait: seconds(Stage::EngineWait),
    }
}
