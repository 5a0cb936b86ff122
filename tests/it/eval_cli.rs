//! `deja eval` as a user runs it, with the real model: the sweep over labelled pairs as tables
//! and JSON, the plot, writing the chosen threshold into a config file (comments kept, the file
//! still valid), the replay of a prompt log, and clear errors on bad input.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::common::{deja, model_env};

/// `deja args` in `dir` with the repository's model; it must succeed.
fn run(dir: &Path, args: &[&str]) -> Output {
    let out = deja(dir).envs(model_env()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "deja {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write_pairs(dir: &Path) {
    let rows = [
        json!({"a": "What is an AI gateway?", "b": "What's an AI gateway?", "same_answer": true, "lang": "en"}),
        json!({"a": "How do I reset my password?", "b": "How can I reset my password?", "same_answer": true, "lang": "en"}),
        json!({"a": "How do I turn on Bluetooth?", "b": "How do I turn off Bluetooth?", "same_answer": false, "lang": "en"}),
        json!({"a": "What is 3 squared?", "b": "What is 4 squared?", "same_answer": false, "lang": "en"}),
        json!({"a": "怎么申请退款?", "b": "如何申请退款？", "same_answer": true, "lang": "zh"}),
        json!({"a": "北京今天天气怎么样", "b": "上海今天天气怎么样", "same_answer": false, "lang": "zh"}),
        json!({"a": [{"role": "user", "content": "I use Windows."}, {"role": "assistant", "content": "OK."}, {"role": "user", "content": "How do I install Python?"}],
               "b": [{"role": "user", "content": "I use macOS."}, {"role": "assistant", "content": "OK."}, {"role": "user", "content": "How do I install Python?"}],
               "same_answer": false, "lang": "en"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("pairs.jsonl"), text).unwrap();
}

#[test]
fn pairs_are_swept_as_tables_and_json_and_plotted() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path());
    let out = run(
        dir.path(),
        &["eval", "--pairs", "pairs.jsonl", "--plot", "eval.png"],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("model multilingual-e5-small, guards [numbers+negation+content]"),
        "{text}"
    );
    assert!(
        text.contains("threshold  served  wrong  precision  recall"),
        "{text}"
    );
    assert!(text.contains("chosen threshold"), "{text}");
    let png = std::fs::read(dir.path().join("eval.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);

    let out = run(dir.path(), &["eval", "--pairs", "pairs.jsonl", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: Vec<&str> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["all", "en", "zh"]);
    let all = &report["groups"][0];
    assert_eq!(
        (all["same_answer"].as_u64(), all["traps"].as_u64()),
        (Some(3), Some(4))
    );
    let sweep = all["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 30, "0.70 to 0.99");
    // The guards and the partition refuse every trap here, at every threshold.
    assert!(sweep.iter().all(|r| r["wrong"] == 0.0), "{all}");
    assert_eq!(sweep[0]["recall"], 1.0, "{all}");
    assert_eq!(
        report["chosen_threshold"]
            .as_f64()
            .map(|t| (t * 100.0).round()),
        Some(70.0)
    );
}

#[test]
fn the_chosen_threshold_is_written_into_the_route() {
    let dir = tempfile::tempdir().unwrap();
    write_pairs(dir.path());
    let config =
        "# our gateway\n[[routes]]\n# support questions\nname = \"support\"\nmodels = [\"yi-*\"]\n";
    std::fs::write(dir.path().join("deja.toml"), config).unwrap();
    for route in ["support", "faq"] {
        let out = run(
            dir.path(),
            &[
                "eval",
                "--pairs",
                "pairs.jsonl",
                "--config",
                "deja.toml",
                "--write-route",
                route,
            ],
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("wrote routes[{route}]")));
    }
    let written = std::fs::read_to_string(dir.path().join("deja.toml")).unwrap();
    assert!(
        written.starts_with("# our gateway\n[[routes]]\n# support questions\n"),
        "{written}"
    );
    assert_eq!(
        written.matches("similarity_threshold = 0.7").count(),
        2,
        "{written}"
    );
    assert!(written.contains("name = \"faq\""), "{written}");
    run(dir.path(), &["check-config", "--config", "deja.toml"]);
}

#[test]
fn a_replay_reports_hit_rates_per_threshold_and_guard_set() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = [
        json!("What is an AI gateway?"),
        json!({"prompt": "What is an AI gateway?"}),
        json!({"messages": [{"role": "user", "content": "What's an AI gateway?"}]}),
        json!("How do I turn on Bluetooth?"),
        json!("How do I turn off Bluetooth?"),
    ];
    let text: String = prompts.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(dir.path().join("log.jsonl"), text).unwrap();
    let out = run(dir.path(), &["eval", "--replay", "log.jsonl", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rate = |guards: &str, threshold: f64| {
        report["rates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["guards"] == guards && (r["threshold"].as_f64().unwrap() - threshold).abs() < 1e-4
            })
            .map(|r| r["hit_rate"].as_f64().unwrap())
            .unwrap()
    };
    // Always: the exact repeat. At 0.90: the paraphrase too; without guards, also the look-alike.
    // (Whether the paraphrase clears 0.99 depends on the machine running the quantised model:
    // under it where this test was written, over it on another, so 0.99 is only bounded.)
    let all = "numbers+negation+content";
    assert!(rate(all, 0.99) >= 0.2 - 1e-4 && rate(all, 0.99) <= rate(all, 0.90) + 1e-4);
    assert!((rate("numbers+negation+content", 0.90) - 0.4).abs() < 1e-4);
    assert!((rate("none", 0.90) - 0.6).abs() < 1e-4);
    assert!((rate("negation", 0.90) - 0.4).abs() < 1e-4);
    // The route's own decision, the verifier at max_wrong 0.01: the repeat and the paraphrase,
    // never on and off.
    let verified = report["verifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| (r["max_wrong"].as_f64().unwrap() - 0.01).abs() < 1e-6)
        .map(|r| r["hit_rate"].as_f64().unwrap());
    assert!((verified.unwrap() - 0.4).abs() < 1e-4, "{report}");
    let table =
        String::from_utf8(run(dir.path(), &["eval", "--replay", "log.jsonl"]).stdout).unwrap();
    assert!(table.contains("hit rate (semantic part) by guard set"));
    assert!(table.contains("with the verifier (the route's decision)"));
}

#[test]
fn bad_input_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"a\":\"x\",\"b\":\"y\",\"same_answer\":true}\n{\"a\":\"x\"}\n",
    )
    .unwrap();
    let out = deja(dir.path())
        .envs(model_env())
        .args(["eval", "--pairs", "bad.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.jsonl:2: missing \"b\""), "{err}");
    let out = deja(dir.path())
        .envs(model_env())
        .args(["eval"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = deja(dir.path())
        .envs(model_env())
        .args(["eval", "--pairs", "nope.jsonl"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.jsonl"));
}
