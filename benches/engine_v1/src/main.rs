//! Encodes the same texts with tokenizers 0.23 (what sftpack uses) and the 1.0 release
//! candidate, one thread, and reports tokens/s and how many texts get identical ids.

use std::str::FromStr;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (tok_path, texts_path) = (&args[1], &args[2]);
    let texts: Vec<String> = serde_json::from_str(&std::fs::read_to_string(texts_path).unwrap()).unwrap();
    let old = tok023::Tokenizer::from_str(&std::fs::read_to_string(tok_path).unwrap()).unwrap();
    let new = match tokv1::from_json_file(tok_path) {
        Ok(t) => t,
        Err(e) => {
            // An older tokenizer.json may need the upgrade pass first.
            eprintln!("direct load failed: {e}; canonicalizing");
            let canonical = tokv1::canonicalize_file(tok_path).unwrap();
            tokv1::from_json(&canonical).unwrap()
        }
    };
    let opts = tokv1::pipeline::EncodeOptions { add_special_tokens: false, ..Default::default() };
    for round in 0..2 {
        let t = std::time::Instant::now();
        let a: Vec<Vec<u32>> = texts.iter().map(|s| old.encode(s.as_str(), false).unwrap().get_ids().to_vec()).collect();
        let old_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let b: Vec<Vec<u32>> = texts.iter().map(|s| new.encode(s.as_str(), &opts).wait().unwrap().remove(0).ids().iter().map(|t| t.id()).collect::<Vec<u32>>()).collect();
        let new_s = t.elapsed().as_secs_f64();
        let n: usize = a.iter().map(Vec::len).sum();
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        println!("round {round}: 0.23 {:.0} tok/s, 1.0-rc.3 {:.0} tok/s ({:.2}x), identical ids {same}/{}", n as f64 / old_s, n as f64 / new_s, old_s / new_s, texts.len());
    }
}
