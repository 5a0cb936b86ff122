//! Precision and recall of the semantic tier's similarity on the labelled pairs in
//! `tests/data/pairs.jsonl`, with the real default model, at the model's default threshold.
//! Fails if precision (share of served pairs that really had the same answer) drops below 0.95.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use deja::cache::guard::{Guard, refuse};
use deja::config::{EmbeddingConfig, ModelName};
use deja::embedding::Embedder;
use deja::embedding::onnx::OnnxEmbedder;

struct Pair {
    a: String,
    b: String,
    lang: String,
    category: String,
    same: bool,
    similarity: f32,
}

fn scored(model: ModelName, lang: Option<&str>) -> Vec<Pair> {
    let embedder = OnnxEmbedder::load(&EmbeddingConfig {
        model,
        ..EmbeddingConfig::default()
    })
    .unwrap();
    let text = std::fs::read_to_string("tests/data/pairs.jsonl").unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|row| lang.is_none_or(|l| row["lang"] == l))
        .map(|row| {
            let (a, b) = (row["a"].as_str().unwrap(), row["b"].as_str().unwrap());
            // One at a time, as requests arrive.
            let va = embedder.embed_blocking(&[a]).unwrap().remove(0).vector;
            let vb = embedder.embed_blocking(&[b]).unwrap().remove(0).vector;
            Pair {
                a: a.to_owned(),
                b: b.to_owned(),
                lang: row["lang"].as_str().unwrap().to_owned(),
                category: row["category"].as_str().unwrap().to_owned(),
                same: row["same_answer"].as_bool().unwrap(),
                similarity: va.iter().zip(&vb).map(|(x, y)| x * y).sum(),
            }
        })
        .collect()
}

/// (precision, recall, served wrong) of `pairs` at `threshold` with `guards`.
fn rates<'a>(
    pairs: impl Iterator<Item = &'a Pair> + Clone,
    threshold: f32,
    guards: &[Guard],
) -> (f32, f32, usize) {
    let served = pairs
        .clone()
        .filter(|p| p.similarity >= threshold && refuse(guards, &p.a, &p.b).is_none());
    let right = served.clone().filter(|p| p.same).count();
    let wrong = served.count() - right;
    let positives = pairs.filter(|p| p.same).count();
    let precision = if right + wrong == 0 {
        1.0
    } else {
        right as f32 / (right + wrong) as f32
    };
    (precision, right as f32 / positives.max(1) as f32, wrong)
}

#[test]
fn default_threshold_keeps_precision_above_0_95() {
    let model = ModelName::MultilingualE5Small;
    let pairs = scored(model, None);
    assert!(
        pairs.len() >= 200,
        "the labelled set needs at least 200 pairs"
    );
    let guards = Guard::all();
    println!(
        "threshold  lang  | no guards: precision recall wrong | guards: precision recall wrong"
    );
    for t in [0.85f32, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98] {
        for lang in ["zh", "en"] {
            let (p0, r0, w0) = rates(pairs.iter().filter(|x| x.lang == lang), t, &[]);
            let (p, r, w) = rates(pairs.iter().filter(|x| x.lang == lang), t, &guards);
            println!("{t:9.2}  {lang:4}  | {p0:9.3} {r0:6.3} {w0:5} | {p:9.3} {r:6.3} {w:5}");
        }
    }
    for t in [0.90f32, 0.95, 0.96, 0.97] {
        let (p0, r0, _) = rates(pairs.iter(), t, &[]);
        let (p, r, _) = rates(pairs.iter(), t, &guards);
        println!("both languages at {t:.2}: alone {p0:.3} / {r0:.3}, with guards {p:.3} / {r:.3}");
    }
    let mut wrong: Vec<&Pair> = pairs
        .iter()
        .filter(|p| !p.same && refuse(&guards, &p.a, &p.b).is_none())
        .collect();
    wrong.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    for p in wrong.iter().take(8) {
        println!(
            "closest trap past the guards: {:.4} {} {}",
            p.similarity, p.lang, p.category
        );
    }
    let threshold = model.default_threshold();
    let (precision, recall, _) = rates(pairs.iter(), threshold, &guards);
    println!("default threshold {threshold}: precision {precision:.3}, recall {recall:.3}");
    assert!(
        precision >= 0.95,
        "precision {precision:.3} at the default threshold {threshold}"
    );
    assert!(
        recall > 0.0,
        "the default threshold must serve some paraphrases"
    );
}

#[test]
fn minilm_default_threshold_keeps_english_precision_above_0_95() {
    // English only: MiniLM reads Chinese as [UNK]s, and deja skips the semantic tier for it.
    let model = ModelName::AllMinilmL6V2;
    let pairs = scored(model, Some("en"));
    let guards = Guard::all();
    for t in [0.75f32, 0.80, 0.85, 0.90, 0.95] {
        let (p0, r0, _) = rates(pairs.iter(), t, &[]);
        let (p, r, w) = rates(pairs.iter(), t, &guards);
        println!(
            "minilm en at {t:.2}: alone {p0:.3} / {r0:.3}, with guards {p:.3} / {r:.3} ({w} wrong)"
        );
    }
    let threshold = model.default_threshold();
    let (precision, recall, _) = rates(pairs.iter(), threshold, &guards);
    println!("minilm default threshold {threshold}: precision {precision:.3}, recall {recall:.3}");
    assert!(
        precision >= 0.95,
        "precision {precision:.3} at the default threshold {threshold}"
    );
    assert!(recall > 0.0);
}
