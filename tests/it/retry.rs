//! Retries against a scripted stand-in: counts of upstream calls, waits, headers, final answers.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use common::{ChatReply, Gateway, Reply, Upstream, ask, config, free_port, question};

const FAST_RETRY: &str = "[[routes]]\nname = \"default\"\n[routes.retry]\nattempts = 3\nbase_delay = \"1ms\"\nmax_delay = \"5ms\"\n";

/// Asks a question never asked before (so no answer comes from the cache), under the Portkey
/// config `config_header` if given.
async fn ask_anew(gw: &Gateway, config_header: Option<&str>) -> ChatReply {
    static ASKED: AtomicUsize = AtomicUsize::new(0);
    let text = format!("retry me #{}", ASKED.fetch_add(1, Ordering::Relaxed));
    let headers: Vec<(&str, &str)> = config_header
        .map(|h| ("x-portkey-config", h))
        .into_iter()
        .collect();
    ask(gw, &question(&text), &headers).await
}

fn gaps(upstream: &Upstream) -> Vec<Duration> {
    let got = upstream.received();
    got.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test]
async fn retryable_statuses_are_retried_until_success() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, FAST_RETRY)).await;
    upstream.script([Reply::status(503), Reply::status(429), Reply::ok()]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("2"));
    assert_eq!(upstream.calls(), 3);
}

#[tokio::test]
async fn when_retries_run_out_the_last_upstream_answer_is_returned() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, FAST_RETRY)).await;
    upstream.script([
        Reply::status(500),
        Reply::status(502),
        Reply::status(503),
        Reply::status(504),
        Reply::ok(),
    ]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 504);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("3"));
    assert!(res.body.contains("stand-in says 504"), "{}", res.body);
    assert_eq!(upstream.calls(), 4, "1 try + 3 retries");
}

#[tokio::test]
async fn other_statuses_are_not_retried() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, FAST_RETRY)).await;
    upstream.script([Reply::status(400), Reply::ok()]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("0"));
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn default_route_does_not_retry() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    upstream.script([Reply::status(503), Reply::ok()]);
    assert_eq!(ask_anew(&gw, None).await.status, 503);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn portkey_config_header_sets_the_retry_policy() {
    let upstream = Upstream::spawn().await;
    let fast = "[[routes]]\nname = \"default\"\n[routes.retry]\nbase_delay = \"1ms\"\nmax_delay = \"5ms\"\n";
    let gw = Gateway::spawn(config(&upstream.url, fast)).await;
    // Exactly what Portkey's SDK sends for the tutorial's method B.
    let header = r#"{"retry":{"attempts":3,"on_status_codes":[429,500,502,503]}}"#;
    upstream.script([Reply::status(429), Reply::status(500), Reply::ok()]);
    let res = ask_anew(&gw, Some(header)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("2"));
    assert_eq!(upstream.calls(), 3);

    // The header's status list replaces the route's: 504 is not in it.
    upstream.script([Reply::status(504), Reply::ok()]);
    let res = ask_anew(&gw, Some(header)).await;
    assert_eq!(res.status, 504);
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn exponential_backoff_waits_are_respected() {
    let upstream = Upstream::spawn().await;
    let policy = "[[routes]]\nname = \"default\"\n[routes.retry]\nattempts = 3\nbase_delay = \"40ms\"\nmax_delay = \"100ms\"\njitter = false\n";
    let gw = Gateway::spawn(config(&upstream.url, policy)).await;
    upstream.script([
        Reply::status(503),
        Reply::status(503),
        Reply::status(503),
        Reply::ok(),
    ]);
    assert_eq!(ask_anew(&gw, None).await.status, 200);
    let gaps = gaps(&upstream);
    assert_eq!(gaps.len(), 3);
    for (gap, floor) in gaps.iter().zip([40, 80, 100]) {
        assert!(
            *gap >= Duration::from_millis(floor),
            "waited {gap:?}, expected at least {floor}ms: {gaps:?}"
        );
    }
}

#[tokio::test]
async fn retry_after_seconds_and_http_dates_are_honoured() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, FAST_RETRY)).await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    upstream.script([
        Reply::status(503).header("retry-after", &date),
        Reply::status(429).header("retry-after", "1"),
        Reply::ok(),
    ]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("2"));
    let gaps = gaps(&upstream);
    // An HTTP date has one-second resolution: "2s from now" may be read as just over 1s.
    assert!(
        gaps[0] >= Duration::from_millis(900),
        "HTTP-date Retry-After waited only {:?}",
        gaps[0]
    );
    assert!(
        gaps[1] >= Duration::from_secs(1),
        "Retry-After: 1 waited only {:?}",
        gaps[1]
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_ends_retrying() {
    let upstream = Upstream::spawn().await;
    let policy = "[[routes]]\nname = \"default\"\n[routes.retry]\nattempts = 3\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\nmax_retry_after = \"2s\"\n";
    let gw = Gateway::spawn(config(&upstream.url, policy)).await;
    upstream.script([Reply::status(429).header("retry-after", "120"), Reply::ok()]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("0"));
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test]
async fn per_attempt_timeouts_are_retried_then_reported_as_504() {
    let upstream = Upstream::spawn().await;
    let policy = "[[routes]]\nname = \"default\"\ntimeout = \"100ms\"\n[routes.retry]\nattempts = 1\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\n";
    let gw = Gateway::spawn(config(&upstream.url, policy)).await;
    let slow = Reply::ok().delayed(Duration::from_millis(600));
    upstream.script([slow.clone(), Reply::ok()]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 200, "a timed-out attempt is retried");
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("1"));

    upstream.script([slow.clone(), slow]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 504);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("1"));
    let err = res.json();
    assert_eq!(err["error"]["code"], "upstream_timeout");
    assert_eq!(err["error"]["type"], "api_error");
    assert_eq!(upstream.calls(), 4);
}

#[tokio::test]
async fn request_timeout_from_the_portkey_config_applies() {
    let upstream = Upstream::spawn().await;
    let gw = Gateway::spawn(config(&upstream.url, "")).await;
    upstream.script([Reply::ok().delayed(Duration::from_millis(500))]);
    let res = ask_anew(&gw, Some(r#"{"request_timeout":50}"#)).await;
    assert_eq!(res.status, 504);
}

#[tokio::test]
async fn connection_refused_is_retried_then_reported_as_502() {
    let url = format!("http://127.0.0.1:{}/v1", free_port());
    let gw = Gateway::spawn(config(&url, FAST_RETRY)).await;
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 502);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("3"));
    let err = res.json();
    assert_eq!(err["error"]["code"], "upstream_unreachable");
    let metrics = gw.scrape_metrics().await;
    let attempts = common::metric(
        &metrics,
        "deja_upstream_attempts_total",
        &[("route", "default"), ("outcome", "unreachable")],
    );
    assert_eq!(attempts, Some(4.0));
}

#[tokio::test]
async fn the_overall_deadline_ends_retrying_early() {
    let upstream = Upstream::spawn().await;
    let policy = "[[routes]]\nname = \"default\"\ntimeout = \"5s\"\n[routes.retry]\nattempts = 5\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\ndeadline = \"300ms\"\n";
    let gw = Gateway::spawn(config(&upstream.url, policy)).await;
    // Each try takes 200ms: the second is cut off by the deadline, and no third starts.
    upstream.script(vec![
        Reply::status(503).delayed(Duration::from_millis(200));
        6
    ]);
    let res = ask_anew(&gw, None).await;
    assert_eq!(res.status, 504);
    assert_eq!(res.header("x-portkey-retry-attempt-count"), Some("1"));
    assert_eq!(upstream.calls(), 2);
}
