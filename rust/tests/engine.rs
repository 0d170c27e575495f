//! The engine's stages end to end, without Python, on the demo tokenizer and data that ship with
//! the package (python/sftpack/assets/demo: a ChatML template, 202 records of which 2 are bad).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use _core::check::{check, samples};
use _core::encode::Outcome;
use _core::pipeline::{build_encoder, JobConfig};
use _core::preprocess::{preprocess, PreprocessConfig};
use _core::schema::{parse_json, to_conversation, Format};
use _core::tokenize::{Flavor, TokenizerBundle};
use serde_json::{json, Value};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/sftpack/assets/demo")
}

/// A fresh folder of this test's own under the system's temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sftpack-rust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn job(inputs: Vec<PathBuf>) -> JobConfig {
    serde_json::from_value(json!({"inputs": inputs, "tokenizer": demo()})).expect("job config")
}

fn preprocess_config(inputs: Vec<PathBuf>, out: &Path) -> PreprocessConfig {
    serde_json::from_value(
        json!({"job": {"inputs": inputs, "tokenizer": demo(), "encode": {"max_length": 256}},
                                  "out": out}),
    )
    .expect("preprocess config")
}

#[test]
fn tokenize_spells_special_tokens_as_single_ids_and_decodes_back() {
    let bundle = TokenizerBundle::load(&demo()).expect("demo tokenizer");
    let text = "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>";
    let tokens = bundle.encode(Flavor::Transformers, text, &[], true).expect("encodes");
    assert_eq!(tokens.ids.first().copied(), bundle.token_to_id("<|im_start|>"));
    assert_eq!(tokens.ids.last().copied(), bundle.token_to_id("<|im_end|>"));
    assert_eq!(tokens.starts.len(), tokens.ids.len());
    assert_eq!(bundle.decode(&tokens.ids), text);
}

#[test]
fn encode_trains_the_reply_and_its_end_of_turn_only() {
    let encoder = build_encoder(&job(vec![])).expect("encoder");
    let record = parse_json(
        r#"{"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "5."}]}"#,
    )
    .expect("json");
    let conversation = to_conversation(Format::OpenAi, &record).expect("valid");
    let Outcome::Encoded(encoded) = encoder.encode(&conversation) else {
        panic!("encodes");
    };
    let trained: Vec<u32> = encoded
        .ids
        .iter()
        .zip(&encoded.mask)
        .filter(|(_, &m)| m == 1)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(encoder.tokenizer.decode(&trained), "5.<|im_end|>");
}

#[test]
fn the_pipeline_checks_every_record_and_the_counts_reconcile() {
    let report = check(&job(vec![demo().join("chat.jsonl")]), None).expect("check");
    assert_eq!((report.records, report.rejected), (202, 2));
    assert_eq!(report.records, report.encoded + report.rejected + report.dropped);
    let shown = samples(&job(vec![demo().join("chat.jsonl")]), 3, None).expect("samples");
    assert_eq!(shown.len(), 3);
    assert!(shown.iter().all(|s| s.record.is_some() && s.trained_tokens > 0));
}

fn documents(out: &Path) -> Vec<(Vec<i64>, Vec<i64>)> {
    // The pack's documents as ids and masks, read back with the engine's own Arrow crates.
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, UInt8Type};
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("manifest")).expect("json");
    let mut found = Vec::new();
    for shard in manifest["shards"].as_array().expect("shards") {
        let file = std::fs::File::open(out.join(shard["file"].as_str().expect("file"))).expect("shard");
        for batch in arrow_ipc::reader::FileReader::try_new(file, None).expect("arrow file") {
            let batch = batch.expect("batch");
            let (ids, mask, cu) = (
                batch.column_by_name("input_ids").expect("ids").as_list::<i32>().clone(),
                batch
                    .column_by_name("loss_mask")
                    .expect("mask")
                    .as_list::<i32>()
                    .clone(),
                batch.column_by_name("cu_seqlens").expect("cu").as_list::<i32>().clone(),
            );
            for row in 0..batch.num_rows() {
                let ids = ids.value(row);
                let ids: Vec<i64> = ids
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                let mask = mask.value(row);
                let mask: Vec<i64> = mask
                    .as_primitive::<UInt8Type>()
                    .values()
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                let cu = cu.value(row);
                let cu: Vec<usize> = cu
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|&v| v as usize)
                    .collect();
                for pair in cu.windows(2) {
                    found.push((ids[pair[0]..pair[1]].to_vec(), mask[pair[0]..pair[1]].to_vec()));
                }
            }
        }
    }
    found.sort();
    found
}

#[test]
fn preprocess_packs_jsonl_and_parquet_to_the_same_documents_and_reruns_for_free() {
    let dir = scratch("preprocess");
    let jsonl = demo().join("chat.jsonl");
    let report = preprocess(
        &preprocess_config(vec![jsonl.clone()], &dir.join("a")),
        None,
        &mut |_| true,
    )
    .expect("preprocess");
    let counts = serde_json::to_value(&report.manifest.counts).expect("counts");
    assert_eq!(counts["records_read"], 202);
    assert_eq!(
        counts["packed"].as_u64().unwrap_or(0) + counts["rejected"].as_u64().unwrap_or(0),
        202
    );
    // (input bytes read are counted process-wide, so not here where tests run side by side;
    // tests/test_preprocess.py checks that a run reads its input once)
    let again = preprocess(
        &preprocess_config(vec![jsonl.clone()], &dir.join("a")),
        None,
        &mut |_| true,
    )
    .expect("rerun");
    assert_eq!(again.status, "up to date");

    // The good records as one Parquet file: a `messages` column of list<struct<role, content>>.
    let good: Vec<Value> = std::fs::read_to_string(&jsonl)
        .expect("data")
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| {
            v["messages"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["role"] != "bot" && m.get("loss").is_none()))
        })
        .collect();
    let parquet = dir.join("chat.parquet");
    write_messages_parquet(&good, &parquet);
    preprocess(&preprocess_config(vec![parquet], &dir.join("b")), None, &mut |_| true).expect("parquet");
    assert_eq!(documents(&dir.join("a")), documents(&dir.join("b")));
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_messages_parquet(records: &[Value], path: &Path) {
    use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Fields, Schema};
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    let mut builder = ListBuilder::new(StructBuilder::from_fields(fields, records.len()));
    for record in records {
        for message in record["messages"].as_array().expect("messages") {
            let item = builder.values();
            item.field_builder::<StringBuilder>(0)
                .expect("role")
                .append_value(message["role"].as_str().expect("role"));
            item.field_builder::<StringBuilder>(1)
                .expect("content")
                .append_value(message["content"].as_str().expect("text"));
            item.append(true);
        }
        builder.append(true);
    }
    let column: Arc<dyn arrow_array::Array> = Arc::new(builder.finish());
    let schema = Arc::new(Schema::new(vec![Field::new(
        "messages",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

#[test]
fn merging_the_parts_of_a_partitioned_run_gives_the_whole_runs_documents() {
    use _core::preprocess::merge::merge_parts;
    let dir = scratch("merge");
    let jsonl = demo().join("chat.jsonl");
    preprocess(
        &preprocess_config(vec![jsonl.clone()], &dir.join("whole")),
        None,
        &mut |_| true,
    )
    .expect("whole");
    let mut parts = Vec::new();
    for index in [1, 0, 2] {
        let mut config = preprocess_config(vec![jsonl.clone()], &dir.join(format!("part-{index}")));
        config.partition = Some(serde_json::from_value(json!({"count": 3, "index": index})).expect("partition"));
        preprocess(&config, None, &mut |_| true).expect("part");
        parts.push(dir.join(format!("part-{index}")));
    }
    let merged = merge_parts(&parts, &dir.join("merged"), false).expect("merge");
    assert_eq!(merged.status, "done");
    assert_eq!(documents(&dir.join("merged")), documents(&dir.join("whole")));
    assert!(merged.manifest.counts.tally.reconciles() && merged.manifest.config.partition.is_none());
    assert_eq!(
        merge_parts(&parts, &dir.join("merged"), false).expect("again").status,
        "up to date"
    );
    let missing = merge_parts(&parts[..2], &dir.join("other"), false)
        .err()
        .expect("a part is missing");
    assert!(missing.to_string().contains("parts [2] of 3 are missing"), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_source_encodes_a_record_the_same_way() {
    use _core::pipeline::encode_record;
    let encoder = build_encoder(&job(vec![])).expect("encoder");
    let openai = r#"{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}"#;
    let sharegpt = r#"{"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}"#;
    let (Outcome::Encoded(a), Outcome::Encoded(b)) = (
        encode_record(openai, None, &encoder),
        encode_record(sharegpt, None, &encoder),
    ) else {
        panic!("both encode");
    };
    assert_eq!(a, b);
    let Outcome::Rejected(problems) = encode_record(r#"{"q": 1}"#, None, &encoder) else {
        panic!("rejected");
    };
    assert_eq!(problems[0].kind, "unknown_format");
    assert!(problems[0].message.contains("[\"q\"]"), "names the keys it found");
}

#[test]
fn raw_text_documents_end_with_eos_and_long_ones_pack_as_max_length_chunks() {
    let dir = scratch("raw-text");
    let long = "one two three four five six seven eight nine ten ".repeat(40);
    let data = dir.join("docs.jsonl");
    let lines = [json!({"text": "a short document"}), json!({"text": long})];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&data, text).expect("data");
    let mut config = preprocess_config(vec![data], &dir.join("pack"));
    config.job.format = Some("text".into());
    config.job.encode.max_length = Some(64);
    let report = preprocess(&config, None, &mut |_| true).expect("preprocess");
    assert_eq!(report.manifest.template.name, "raw_text");
    let counts = &report.manifest.counts.tally;
    assert_eq!((counts.records_read, counts.packed), (2, 2));
    let encoder = build_encoder(&config.job).expect("encoder");
    let eos = encoder.tokenizer.token_to_id("<|im_end|>").expect("the demo's eos");
    let whole = encoder.encode_text(&long).expect("encodes");
    assert_eq!(whole.ids.last(), Some(&eos));
    assert!(whole.ids.len() > 128, "long enough to make several chunks");
    let chunks: Vec<Vec<i64>> = whole
        .ids
        .chunks(64)
        .map(|c| c.iter().map(|&i| i64::from(i)).collect())
        .collect();
    let packed: Vec<Vec<i64>> = documents(&dir.join("pack")).into_iter().map(|(ids, _)| ids).collect();
    for chunk in &chunks {
        assert!(packed.contains(chunk), "every chunk packed as a document");
    }
    assert_eq!(packed.len(), chunks.len() + 1);
}
