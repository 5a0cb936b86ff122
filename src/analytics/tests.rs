use super::*;

pub(super) fn row(cache: &str, latency_ms: f64, tokens: i64, model: &str) -> LogRecord {
    LogRecord {
        endpoint: "chat.completions".to_owned(),
        route: "support".to_owned(),
        model: model.to_owned(),
        cache_status: cache.to_owned(),
        attempts: 1,
        status: 200,
        latency_ms,
        tokens,
        ..LogRecord::default()
    }
}

fn report(rows: &[LogRecord], from: i64, to: i64, buckets: usize) -> Vec<RouteCache> {
    let prices: Vec<(String, f64)> = crate::config::LogConfig::default().price_list();
    cache_report(
        rows,
        &ReportSpec {
            prices: &prices,
            threshold: &|_| 0.96,
            from,
            to,
            buckets,
        },
    )
}

#[test]
fn the_report_counts_hits_latency_tokens_cost_and_similarity() {
    let rows = [
        row("miss", 900.0, 100, "yi-lightning"),
        row("miss", 1100.0, 100, "yi-lightning"),
        row("hit", 1.0, 100, "yi-lightning"),
        LogRecord {
            similarity: Some(0.975),
            ..row("semantic_hit", 6.0, 1000, "yi-large-turbo")
        },
    ];
    let report = report(&rows, 0, 1, 1);
    assert_eq!(report.len(), 1);
    let r = &report[0];
    assert_eq!(
        (r.requests, r.exact_hit_ratio, r.semantic_hit_ratio),
        (4, 0.25, 0.25)
    );
    assert_eq!(r.latency["miss"].p50, 1100.0);
    assert_eq!(r.tokens_saved, 1100);
    let expected = 100.0 * 0.14 / 1e6 + 1000.0 * 2.80 / 1e6;
    assert!(
        (r.cost_saved_usd - expected).abs() < 1e-12,
        "{}",
        r.cost_saved_usd
    );
    let at = |b: f64| r.similarity.buckets.iter().position(|x| *x == b).unwrap();
    assert_eq!(r.similarity.hits[at(0.97)], 1);
    assert_eq!(r.similarity.hits.iter().sum::<usize>(), 1);
    assert!(r.latency_saved_ms > 2000.0, "{}", r.latency_saved_ms);
    let prices = crate::config::LogConfig::default().price_list();
    assert_eq!(price(&prices, "some-other-model"), 0.0);
}

#[test]
fn near_misses_and_refusals_are_told_apart() {
    let miss = |nearest: f64, guard: &str| LogRecord {
        nearest: Some(nearest),
        guard: guard.to_owned(),
        ..row("miss", 900.0, 10, "yi-lightning")
    };
    let rows = [
        miss(0.95, ""),        // near: within 0.03 under 0.96
        miss(0.935, ""),       // near
        miss(0.90, ""),        // too far
        miss(0.98, "numbers"), // over the threshold, refused
        miss(0.97, "content"),
        row("miss", 900.0, 10, "yi-lightning"), // nothing stored to compare with
    ];
    let r = &report(&rows, 0, 1, 1)[0];
    assert_eq!(r.threshold, 0.96);
    assert_eq!(r.near_misses.count, 2);
    assert_eq!(r.near_misses.share_of_misses, 2.0 / 5.0);
    assert_eq!(
        r.guard_refusals,
        BTreeMap::from([("content".to_owned(), 1), ("numbers".to_owned(), 1)])
    );
    assert_eq!(r.similarity.misses.iter().sum::<usize>(), 3);
    assert_eq!(r.similarity.refused.iter().sum::<usize>(), 2);
    // 0.90 sits in its own bucket, not the one below (float steps).
    let at = |b: f64| r.similarity.buckets.iter().position(|x| *x == b).unwrap();
    assert_eq!(r.similarity.misses[at(0.90)], 1);
}

#[test]
fn the_series_buckets_rows_by_time_with_error_and_retry_ratios() {
    let at = |at: i64, r: LogRecord| LogRecord { at, ..r };
    let rows = [
        at(0, row("miss", 1000.0, 10, "yi-lightning")),
        at(
            10,
            LogRecord {
                attempts: 3,
                status: 503,
                ..row("miss", 3000.0, 0, "yi-lightning")
            },
        ),
        at(60, row("hit", 2.0, 10, "yi-lightning")),
        at(99, row("hit", 4.0, 10, "yi-lightning")),
    ];
    let r = &report(&rows, 0, 100, 2)[0];
    assert_eq!(r.series.len(), 2);
    let (first, second) = (&r.series[0], &r.series[1]);
    assert_eq!((first.at, first.requests, first.hit_ratio), (0, 2, 0.0));
    assert_eq!((first.error_ratio, first.retry_ratio), (0.5, 0.5));
    assert_eq!((second.at, second.requests, second.hit_ratio), (50, 2, 1.0));
    assert_eq!(second.hit_p50_ms, 4.0);
    assert!(second.cost_saved_usd > 0.0);
    assert_eq!((r.error_ratio, r.retry_ratio), (0.25, 0.25));
}
