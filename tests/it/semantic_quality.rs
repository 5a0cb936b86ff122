//! The semantic tier's correctness goal, measured on the labelled pairs in
//! `tests/data/pairs.jsonl` with the real models, the default guards and each model's default
//! threshold: in Chinese and in English separately, at least 50% of same-answer pairs served and
//! at most 2% of look-alike traps served. Prints the figures per language and per category.

use deja::cache::guard::Guard;
use deja::config::{EmbeddingConfig, ModelName};
use deja::embedding::onnx::OnnxEmbedder;
use deja::eval::pairs::{self, Judged, Labels, rates};
use deja::eval::{Prompt, Verdict};

const PAIRS: &str = "tests/data/pairs.jsonl";
const MIN_SERVED: f32 = 0.50;
const MAX_WRONG: f32 = 0.02;

fn labelled() -> Vec<(Prompt, Prompt, Labels)> {
    pairs::parse(PAIRS, &std::fs::read_to_string(PAIRS).unwrap()).unwrap()
}

fn judged(model: ModelName, guards: &[Guard], set: &[(Prompt, Prompt, Labels)]) -> Vec<Judged> {
    let config = EmbeddingConfig {
        model,
        ..EmbeddingConfig::default()
    };
    let embedder = OnnxEmbedder::load(&config).unwrap();
    pairs::judge_all(
        &embedder,
        guards,
        config.max_unknown_token_ratio,
        set,
        |_| {},
    )
    .unwrap()
}

fn report(name: &str, members: &[&Judged], threshold: f32) -> (f32, f32) {
    let r = rates(members.iter().copied(), threshold);
    println!(
        "{name:<16} pairs {:>3}  served same-answer {:.3}  served traps (wrong) {:.3}  precision {:.3}",
        members.len(),
        r.recall,
        r.wrong,
        r.precision
    );
    (r.recall, r.wrong)
}

#[test]
fn the_labelled_set_is_large_and_spread() {
    let set = labelled();
    assert!(set.len() >= 600, "{} pairs", set.len());
    for lang in ["zh", "en"] {
        let of = |same: bool, category: Option<&str>| {
            set.iter()
                .filter(|(_, _, l)| l.lang.as_deref() == Some(lang) && l.same_answer == same)
                .filter(|(_, _, l)| category.is_none_or(|c| l.category.as_deref() == Some(c)))
                .count()
        };
        assert!(of(false, None) >= 150, "{lang}: {} traps", of(false, None));
        for category in ["negation", "entity", "number", "scope", "multi_turn"] {
            assert!(
                of(false, Some(category)) >= 8,
                "{lang}: few {category} traps"
            );
        }
        assert!(
            of(true, Some("multi_turn")) >= 8,
            "{lang}: few multi-turn paraphrases"
        );
    }
}

#[test]
fn e5_at_its_defaults_serves_half_the_paraphrases_and_at_most_2_percent_of_traps() {
    let set = labelled();
    let model = ModelName::MultilingualE5Small;
    let threshold = model.default_threshold();
    let with_guards = judged(model, &Guard::all(), &set);
    let unguarded: Vec<Judged> = with_guards
        .iter()
        .map(|j| Judged {
            verdict: match j.verdict {
                Verdict::Candidate { similarity, .. } => Verdict::Candidate {
                    similarity,
                    refused_by: None,
                },
                Verdict::Never => Verdict::Never,
            },
            ..j.clone()
        })
        .collect();
    println!("multilingual-e5-small at {threshold}, guards: numbers, negation, content");
    let mut failures = Vec::new();
    for lang in ["zh", "en"] {
        let members: Vec<&Judged> = with_guards
            .iter()
            .filter(|j| j.lang.as_deref() == Some(lang))
            .collect();
        let (served, wrong) = report(lang, &members, threshold);
        let bare: Vec<&Judged> = unguarded
            .iter()
            .filter(|j| j.lang.as_deref() == Some(lang))
            .collect();
        report(&format!("{lang} unguarded"), &bare, threshold);
        for category in [
            "paraphrase",
            "multi_turn",
            "negation",
            "entity",
            "number",
            "scope",
            "unrelated",
        ] {
            let of: Vec<&Judged> = members
                .iter()
                .copied()
                .filter(|j| j.category.as_deref() == Some(category))
                .collect();
            report(&format!("{lang}/{category}"), &of, threshold);
        }
        if served < MIN_SERVED || wrong > MAX_WRONG {
            failures.push(format!("{lang}: served {served:.3} (goal >= {MIN_SERVED}), wrong {wrong:.3} (goal <= {MAX_WRONG})"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn minilm_at_its_defaults_meets_the_goal_in_english() {
    // English only: MiniLM reads Chinese as [UNK]s, and deja skips the semantic tier for it.
    let set: Vec<_> = labelled()
        .into_iter()
        .filter(|(_, _, l)| l.lang.as_deref() == Some("en"))
        .collect();
    let model = ModelName::AllMinilmL6V2;
    let judged = judged(model, &Guard::all(), &set);
    let members: Vec<&Judged> = judged.iter().collect();
    let (served, wrong) = report("minilm en", &members, model.default_threshold());
    assert!(
        served >= MIN_SERVED && wrong <= MAX_WRONG,
        "served {served:.3}, wrong {wrong:.3}"
    );
}

/// The verifier on the sealed test split (topics it never saw), at the default `max_wrong`
/// 0.01: the figures the closing note of the verifier's issue quotes (en 79.7% served / 0.7%
/// wrong, zh 77.7% / 1.3%), kept from sliding. Only aggregates are printed: the split is sealed.
#[test]
fn the_verifier_holds_its_sealed_test_figures() {
    use deja::cache::verifier::Verifier;
    use deja::eval::verified::{Rule, featurize, tally};
    let config = EmbeddingConfig::default();
    let verifier = Verifier::load(&config.verifier_path(), config.model.slug()).unwrap();
    let mut set = Vec::new();
    for part in ["en_a", "en_b", "zh_a", "zh_b"] {
        let path = format!("tests/data/sealed/{part}.jsonl");
        set.extend(pairs::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap());
    }
    let embedder = crate::common::shared_embedder();
    let embedded = pairs::embed_pairs(embedder.as_ref(), &set, |_| {}).unwrap();
    let featured = featurize(config.max_unknown_token_ratio, &set, &embedded);
    let rule = Rule::Verifier {
        verifier: &verifier,
        floor: verifier.floor(),
        cut: verifier.cut(0.01),
    };
    let counts = tally(&featured, &rule);
    for lang in ["en", "zh"] {
        let c = counts[lang];
        println!("{lang}: {}", c.line());
        assert_eq!((c.same, c.traps), (300, 300));
        assert!(c.served as f32 / 300.0 >= 0.72, "{lang}: {}", c.line());
        assert!(c.wrong as f32 / 300.0 <= 0.015, "{lang}: {}", c.line());
    }
}
