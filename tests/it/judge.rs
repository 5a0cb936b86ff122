//! The grey zone's judge, with the real model and verifier and the upstream stand-in scripted to
//! answer the judge's prompt: a candidate the verifier is unsure of is served on the judge's
//! "yes", refused on its "no" or past its budget, a verdict is asked once per pair, and what the
//! judge costs is counted. Off by default.

use crate::common;

use common::{Gateway, Reply, Upstream, ask, config_with_mode, metric, question};

/// The route's judge on, at most `per_second` calls a second.
async fn judging_gateway(upstream: &Upstream, per_second: f64) -> Gateway {
    let extra = format!(
        "[[routes]]\nname = \"default\"\n[routes.cache.judge]\nenabled = true\nmax_per_second = {per_second}\ntimeout = \"5s\"\n"
    );
    Gateway::spawn_sharing_model(config_with_mode(&upstream.url, "semantic", &extra)).await
}

fn judge_calls(metrics: &str, verdict: &str) -> Option<f64> {
    metric(
        metrics,
        "deja_judge_calls_total",
        &[("route", "default"), ("result", verdict)],
    )
}

// The pairs below sit in the verifier's grey zone (refused at max_wrong 0.01, served at 0.10):
// `deja eval --pairs` with `--max-wrong 0.01` and `0.1` on them says so.

#[tokio::test]
async fn a_yes_serves_the_candidate_once_asked_and_a_no_refuses_it() {
    let upstream = Upstream::spawn().await;
    let gw = judging_gateway(&upstream, 100.0).await;
    let discount = "Students get 20% off with a valid student ID.";
    upstream.script([Reply::answer(discount), Reply::answer("Yes.")]);
    assert_eq!(
        ask(&gw, &question("Is there a student discount?"), &[])
            .await
            .cache(),
        "MISS"
    );
    let judged = ask(&gw, &question("Do students get a discount?"), &[]).await;
    assert_eq!(judged.cache(), "SEMANTIC HIT", "{}", judged.body);
    assert_eq!(judged.content(), discount);
    assert_eq!(upstream.calls(), 2, "the answer, then one judge call");
    let sent: serde_json::Value = serde_json::from_slice(&upstream.received()[1].body).unwrap();
    assert_eq!(
        sent["model"], "yi-lightning",
        "the request's own model by default"
    );
    let prompt = sent["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Is there a student discount?\n")
            && prompt.contains("Do students get a discount?")
            && prompt.ends_with("same answer? yes/no"),
        "{prompt}"
    );

    // The same pair again: the verdict is remembered, nothing is asked.
    let again = ask(&gw, &question("Do students get a discount?"), &[]).await;
    assert_eq!(again.cache(), "SEMANTIC HIT");
    assert_eq!(upstream.calls(), 2);

    // A "no" refuses, and the request is answered upstream.
    let paypal = "Yes, we accept PayPal at checkout.";
    upstream.script([
        Reply::answer(paypal),
        Reply::answer("no"),
        Reply::answer("We take PayPal for orders over $10."),
    ]);
    assert_eq!(
        ask(&gw, &question("Can I pay with PayPal?"), &[])
            .await
            .cache(),
        "MISS"
    );
    let refused = ask(&gw, &question("Do you accept PayPal?"), &[]).await;
    assert_eq!(refused.cache(), "MISS");
    assert_eq!(refused.content(), "We take PayPal for orders over $10.");
    let why = refused.header("x-deja-refused").unwrap_or_default();
    assert!(why.starts_with("judge no (verifier 0."), "{why}");
    assert_eq!(upstream.calls(), 5);

    let metrics = gw.scrape_metrics().await;
    assert_eq!(judge_calls(&metrics, "yes"), Some(1.0), "{metrics}");
    assert_eq!(judge_calls(&metrics, "cached"), Some(1.0));
    assert_eq!(judge_calls(&metrics, "no"), Some(1.0));
    // The stand-in's usage says 10 tokens a call.
    let tokens = metric(&metrics, "deja_judge_tokens_total", &[("route", "default")]);
    assert_eq!(tokens, Some(20.0));
    let timed = metric(
        &metrics,
        "deja_judge_duration_seconds_count",
        &[("route", "default")],
    );
    assert_eq!(timed, Some(2.0));
    let refusals = metric(
        &metrics,
        "deja_semantic_refusals_total",
        &[("route", "default"), ("reason", "judge")],
    );
    assert_eq!(refusals, Some(1.0));
}

#[tokio::test]
async fn past_its_budget_or_when_off_no_judge_is_asked() {
    let upstream = Upstream::spawn().await;
    let gw = judging_gateway(&upstream, 0.0).await;
    upstream.answer_by_default(Reply::answer("an answer"));
    ask(&gw, &question("Is there a student discount?"), &[]).await;
    let skipped = ask(&gw, &question("Do students get a discount?"), &[]).await;
    assert_eq!(skipped.cache(), "MISS");
    let why = skipped.header("x-deja-refused").unwrap_or_default();
    assert!(why.starts_with("judge skipped"), "{why}");
    assert_eq!(upstream.calls(), 2, "two answers, no judge call");
    let metrics = gw.scrape_metrics().await;
    assert_eq!(judge_calls(&metrics, "skipped"), Some(1.0), "{metrics}");

    // Off (the default): the verifier's refusal stands.
    let upstream = Upstream::spawn().await;
    upstream.answer_by_default(Reply::answer("an answer"));
    let gw = Gateway::spawn_sharing_model(config_with_mode(&upstream.url, "semantic", "")).await;
    ask(&gw, &question("Is there a student discount?"), &[]).await;
    let plain = ask(&gw, &question("Do students get a discount?"), &[]).await;
    assert_eq!(plain.cache(), "MISS");
    let why = plain.header("x-deja-refused").unwrap_or_default();
    assert!(why.starts_with("verifier 0."), "{why}");
    assert_eq!(upstream.calls(), 2);
}
