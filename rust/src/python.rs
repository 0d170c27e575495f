//! The pyo3 layer, and nothing else: convert arguments, release the GIL, run the core, convert
//! the result. Jobs take and return JSON text so the boundary stays plain data.

use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::check as engine;
use crate::encode::{Encoder, Outcome};
use crate::error::Error;
use crate::map::RecordMapper;
use crate::pipeline::{build_encoder, encode_record, JobConfig};
use crate::schema::{self, Format};
use crate::tokenize::Flavor;

/// An instance of one of `sftpack.errors`' classes (defined in Python, so that Python code
/// raises and catches the same ones), called with a message and its hint (for `RecordError`:
/// the problems as JSON).
fn sftpack_error(py: Python<'_>, class: &str, args: (String, Option<String>)) -> PyErr {
    let instance = py
        .import("sftpack.errors")
        .and_then(|module| module.getattr(class))
        .and_then(|class| class.call1(args));
    match instance {
        Ok(instance) => PyErr::from_value(instance),
        Err(error) => error,
    }
}

/// Engine errors as Python exceptions: the `sftpack.errors` class of their kind with message and
/// hint as separate fields; I/O failures as Python's own `FileNotFoundError` & co.
impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let class = match &error {
            Error::Io { source, .. } => {
                let message = error.to_string();
                return match source.kind() {
                    std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
                    std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
                    _ => PyOSError::new_err(message),
                };
            }
            Error::Interrupted => return PyKeyboardInterrupt::new_err(error.to_string()),
            Error::Input(_) | Error::Overlong { .. } => "InputError",
            Error::Tokenizer(_) => "TokenizerError",
            Error::Template(_) => "TemplateError",
            Error::Config(_) => "ConfigError",
            Error::Output(_) => "OutputError",
        };
        let (message, hint) = (error.message(), error.fix());
        Python::attach(|py| sftpack_error(py, class, (message, hint)))
    }
}

fn config_error(message: String) -> PyErr {
    Python::attach(|py| sftpack_error(py, "ConfigError", (message, None)))
}

fn parse_config(config_json: &str) -> PyResult<JobConfig> {
    serde_json::from_str(config_json).map_err(|e| config_error(format!("invalid job config: {e}")))
}

/// A Python map function (`sftpack.mapping.MapFunction`): called with a list of record texts,
/// it answers, per text, `(True, mapped_json)` or `(False, reason)`. The GIL is taken for that
/// one call per batch and released again for the parallel work.
struct PyMapper {
    function: Py<PyAny>,
    /// The Python exception that stopped the run (Ctrl-C, a broken function), raised again by
    /// the binding that started it.
    raised: std::sync::Mutex<Option<PyErr>>,
}

impl PyMapper {
    fn new(function: Option<Py<PyAny>>) -> Option<Self> {
        function.map(|function| PyMapper {
            function,
            raised: std::sync::Mutex::new(None),
        })
    }

    /// The job's result, or the Python exception that stopped it.
    fn finish<T>(mapper: Option<Self>, result: crate::error::Result<T>) -> PyResult<T> {
        let raised = mapper.and_then(|m| m.raised.into_inner().ok().flatten());
        match (raised, result) {
            (Some(error), _) => Err(error),
            (None, result) => result.map_err(PyErr::from),
        }
    }
}

impl RecordMapper for PyMapper {
    fn map_batch(&self, texts: &[&str]) -> crate::error::Result<Vec<Result<String, String>>> {
        Python::attach(|py| {
            let answer = py.check_signals().and_then(|()| {
                self.function
                    .call1(py, (texts.to_vec(),))?
                    .bind(py)
                    .extract::<Vec<(bool, String)>>()
            });
            match answer {
                Ok(results) => Ok(results
                    .into_iter()
                    .map(|(ok, text)| if ok { Ok(text) } else { Err(text) })
                    .collect()),
                Err(error) => {
                    if let Ok(mut raised) = self.raised.lock() {
                        *raised = Some(error);
                    }
                    Err(Error::Interrupted)
                }
            }
        })
    }
}

fn as_mapper(mapper: &Option<PyMapper>) -> Option<&dyn RecordMapper> {
    mapper.as_ref().map(|m| m as &dyn RecordMapper)
}

/// check(config_json, map_fn=None) -> report_json
#[pyfunction]
#[pyo3(signature = (config_json, map_fn=None))]
fn check(py: Python<'_>, config_json: &str, map_fn: Option<Py<PyAny>>) -> PyResult<String> {
    let config = parse_config(config_json)?;
    let mapper = PyMapper::new(map_fn);
    let result = py.detach(|| engine::check(&config, as_mapper(&mapper)));
    let report = PyMapper::finish(mapper, result)?;
    serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// samples(config_json, n, map_fn=None) -> json list of the first n records with their tokens and mask.
#[pyfunction]
#[pyo3(signature = (config_json, n, map_fn=None))]
fn samples(py: Python<'_>, config_json: &str, n: usize, map_fn: Option<Py<PyAny>>) -> PyResult<String> {
    let config = parse_config(config_json)?;
    let mapper = PyMapper::new(map_fn);
    let result = py.detach(|| engine::samples(&config, n, as_mapper(&mapper)));
    let samples = PyMapper::finish(mapper, result)?;
    serde_json::to_string(&samples).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// preprocess(config_json, progress=None, map_fn=None) -> report_json. `progress(json)` is called
/// about twice a second; Ctrl-C (or an exception in `progress` or `map_fn`) stops the run, which
/// can then be resumed.
#[pyfunction]
#[pyo3(signature = (config_json, progress=None, map_fn=None))]
fn preprocess(
    py: Python<'_>,
    config_json: &str,
    progress: Option<Py<PyAny>>,
    map_fn: Option<Py<PyAny>>,
) -> PyResult<String> {
    let config: crate::preprocess::PreprocessConfig =
        serde_json::from_str(config_json).map_err(|e| config_error(format!("invalid preprocess config: {e}")))?;
    let mapper = PyMapper::new(map_fn);
    let mut stopped_by: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report = |p: &crate::preprocess::Progress| -> bool {
            Python::attach(|py| {
                let outcome = py.check_signals().and_then(|()| match &progress {
                    Some(callback) => callback
                        .call1(py, (serde_json::to_string(p).unwrap_or_default(),))
                        .map(drop),
                    None => Ok(()),
                });
                outcome.map_err(|e| stopped_by = Some(e)).is_ok()
            })
        };
        crate::preprocess::preprocess(&config, as_mapper(&mapper), &mut report)
    });
    if let Some(error) = stopped_by {
        return Err(error);
    }
    let report = PyMapper::finish(mapper, result)?;
    serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `sftpack.errors.RecordError(message, problems)`: the problems as data (a JSON list).
fn record_error(problems: &[crate::error::Problem]) -> PyErr {
    let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    let detail = serde_json::to_string(problems).unwrap_or_default();
    Python::attach(|py| sftpack_error(py, "RecordError", (message, Some(detail))))
}

/// Encodes single records; holds a loaded tokenizer and template.
#[pyclass(module = "sftpack._core", frozen)]
struct PyEncoder {
    encoder: Encoder,
}

#[pymethods]
impl PyEncoder {
    #[new]
    fn new(py: Python<'_>, config_json: &str) -> PyResult<Self> {
        let config = parse_config(config_json)?;
        let encoder = py.detach(|| build_encoder(&config))?;
        Ok(PyEncoder { encoder })
    }

    /// encode(record_json, format=None) -> dict(input_ids, loss_mask, truncated), or raises
    /// RecordError(message, problems) where problems is a JSON list.
    #[pyo3(signature = (record_json, format=None))]
    fn encode<'py>(&self, py: Python<'py>, record_json: &str, format: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
        let forced = format
            .map(|f| Format::from_name(f).ok_or_else(|| config_error(format!("unknown format \"{f}\""))))
            .transpose()?;
        let outcome = py.detach(|| encode_record(record_json, forced, &self.encoder));
        let problems = match outcome {
            Outcome::Encoded(e) => {
                let dict = PyDict::new(py);
                dict.set_item("input_ids", e.ids)?;
                dict.set_item("loss_mask", e.mask)?;
                dict.set_item("truncated", e.truncated_from.is_some())?;
                return Ok(dict);
            }
            Outcome::Dropped { problem, .. } => vec![problem],
            Outcome::Rejected(ps) => ps,
        };
        Err(record_error(&problems))
    }

    /// prompt(record_json) -> the ids a model continues to answer the conversation's last
    /// message, rendered as training rendered it; or raises RecordError like encode.
    fn prompt(&self, py: Python<'_>, record_json: &str) -> PyResult<Vec<u32>> {
        py.detach(|| {
            let record = schema::parse_json(record_json).map_err(|p| vec![p])?;
            let conversation = schema::to_conversation(Format::OpenAi, &record)?;
            self.encoder.prompt(&conversation).map_err(|p| vec![p])
        })
        .map_err(|problems| record_error(&problems))
    }

    /// stop_tokens() -> dict(ids, texts): what ends a generated assistant turn.
    fn stop_tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stops = py.detach(|| self.encoder.stop_tokens());
        let dict = PyDict::new(py);
        dict.set_item("ids", stops.ids)?;
        dict.set_item("texts", stops.texts)?;
        Ok(dict)
    }

    fn decode(&self, ids: Vec<u32>) -> String {
        self.encoder.tokenizer.decode(&ids)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.encoder.tokenizer.id_to_token(id)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.encoder.tokenizer.token_to_id(token)
    }

    /// vocab_size -> the vocabulary with added tokens (transformers' `len(tokenizer)`).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.encoder.tokenizer.vocab_size()
    }

    #[getter]
    fn template_name(&self) -> String {
        self.encoder.template.name().to_string()
    }

    #[getter]
    fn template_source(&self) -> String {
        self.encoder.template.source()
    }

    /// count_tokens(texts, threads) -> how many tokens the engine's tokenizer makes of `texts`
    /// (no template, no special tokens added, no token starts): the tokenizer floor the
    /// preprocess bench compares against.
    fn count_tokens(&self, py: Python<'_>, texts: Vec<String>, threads: usize) -> PyResult<usize> {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let tokenizer = &self.encoder.tokenizer;
        py.detach(|| {
            pool.install(|| {
                texts
                    .par_iter()
                    .map(|text| {
                        tokenizer
                            .encode(Flavor::Transformers, text, &[], false)
                            .map(|t| t.ids.len())
                    })
                    .sum::<std::result::Result<usize, _>>()
            })
        })
        .map_err(|problem| PyValueError::new_err(problem.message))
    }

    /// tokenizer_engine -> json: which tokenizer engine encodes, and how many texts needed the
    /// old one for their token starts so far.
    #[getter]
    fn tokenizer_engine(&self) -> String {
        serde_json::to_string(&self.encoder.tokenizer.engine_report()).unwrap_or_default()
    }
}

/// normalize_preprocess_config(config_json) -> the config as the engine reads it, every default
/// filled in (for checking that Python's settings mirror the Rust structs).
#[pyfunction]
fn normalize_preprocess_config(config_json: &str) -> PyResult<String> {
    let config: crate::preprocess::PreprocessConfig =
        serde_json::from_str(config_json).map_err(|e| config_error(format!("invalid preprocess config: {e}")))?;
    serde_json::to_string(&config).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// merge_packs(parts_json, out, overwrite) -> json {status, out, manifest}: the parts of a
/// partitioned run joined into one pack.
#[pyfunction]
fn merge_packs(py: Python<'_>, parts_json: &str, out: &str, overwrite: bool) -> PyResult<String> {
    let parts: Vec<std::path::PathBuf> =
        serde_json::from_str(parts_json).map_err(|e| config_error(format!("invalid parts list: {e}")))?;
    let merged = py.detach(|| crate::preprocess::merge::merge_parts(&parts, std::path::Path::new(out), overwrite))?;
    let report = serde_json::json!({"status": merged.status, "out": out, "manifest": merged.manifest});
    Ok(report.to_string())
}

/// settings_defaults() -> json: the defaults and choices of a job's settings (max_length,
/// overlong, formats, template, ...), as the engine applies them.
#[pyfunction]
fn settings_defaults() -> String {
    crate::preprocess::settings_defaults().to_string()
}

/// builtin_templates() -> json object of XTuner prompt templates by name.
#[pyfunction]
fn builtin_templates() -> String {
    let table: serde_json::Map<String, serde_json::Value> = crate::template::builtin::names()
        .into_iter()
        .filter_map(|n| {
            crate::template::builtin::get(n).map(|t| (n.to_string(), serde_json::to_value(t).unwrap_or_default()))
        })
        .collect();
    serde_json::Value::Object(table).to_string()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(samples, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_preprocess_config, m)?)?;
    m.add_function(wrap_pyfunction!(settings_defaults, m)?)?;
    m.add_function(wrap_pyfunction!(merge_packs, m)?)?;
    m.add_class::<PyEncoder>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
