//! The query string of Portkey's analytics endpoints: `time_of_generation_min/max` and the filters
//! `portkey-ai`'s `AnalyticsBaseParams` sends, read into a check over request log rows. A filter
//! deja cannot honour (it records no feedback, metadata or traces) is refused by name rather
//! than silently ignored, so a graph never claims to be filtered when it is not.

use std::collections::HashMap;

use crate::error::AppError;
use crate::store::logs::LogRecord;

/// Accepted and ignored: graphs are not paged and deja has one workspace.
const IGNORED: &[&str] = &[
    "workspace_slug",
    "page_size",
    "current_page",
    "order_by",
    "order_by_type",
    // An operator's choice of tenant, read by the `AdminCaller` extractor.
    "tenant",
];
/// Portkey filters on data deja does not record.
const UNSUPPORTED: &[&str] = &[
    "weighted_feedback_min",
    "weighted_feedback_max",
    "api_key_ids",
    "metadata",
    "trace_id",
    "span_id",
    "prompt_slug",
];

/// An inclusive range; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Range {
    min: Option<f64>,
    max: Option<f64>,
}

impl Range {
    fn holds(self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

/// A parsed analytics query.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsQuery {
    /// `time_of_generation_min`, Unix ms.
    pub from: i64,
    /// `time_of_generation_max`, Unix ms.
    pub to: i64,
    /// deja's own: only this route.
    pub route: Option<String>,
    total_units: Range,
    prompt_tokens: Range,
    completion_tokens: Range,
    /// In cents, as Portkey counts cost.
    cost_cents: Range,
    status_codes: Vec<i64>,
    virtual_keys: Vec<String>,
    configs: Vec<String>,
    models: Vec<String>,
    cache_statuses: Vec<String>,
}

fn bad(param: &'static str, message: String) -> AppError {
    AppError::InvalidField { param, message }
}

/// An ISO 8601 time (`2026-11-27T10:00:00Z`, fractions allowed, `Z` optional), a date, or Unix ms.
pub fn parse_time(param: &'static str, raw: &str) -> Result<i64, AppError> {
    let raw = raw.trim();
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    let full = if raw.len() == 10 {
        format!("{raw}T00:00:00Z")
    } else {
        raw.to_owned()
    };
    let at = humantime::parse_rfc3339_weak(&full).map_err(|e| {
        bad(
            param,
            format!("'{param}' must be an ISO 8601 UTC time such as 2026-11-27T10:00:00Z: {e}"),
        )
    })?;
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .map_err(|_| bad(param, format!("'{param}' is before 1970")))
}

/// Unix ms as ISO 8601 UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Portkey's cache status names (`HIT`, `SEMANTIC HIT`, `MISS`, …) as the log writes them.
fn cache_label(raw: &str) -> String {
    match raw
        .trim()
        .to_ascii_lowercase()
        .replace(['-', ' '], "_")
        .as_str()
    {
        "semantic_miss" => "miss".to_owned(),
        other => other.to_owned(),
    }
}

impl AnalyticsQuery {
    /// Reads the query string; both times are required, as in Portkey's API.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, AppError> {
        let mut q = Self::default();
        let time = |name: &'static str| match params.get(name) {
            Some(raw) => parse_time(name, raw),
            None => Err(bad(
                name,
                format!("'{name}' is required (ISO 8601, such as 2026-11-27T10:00:00Z)"),
            )),
        };
        q.from = time("time_of_generation_min")?;
        q.to = time("time_of_generation_max")?;
        if q.to < q.from {
            return Err(bad(
                "time_of_generation_max",
                "'time_of_generation_max' is before 'time_of_generation_min'".to_owned(),
            ));
        }
        for (name, raw) in params {
            let name = name.as_str();
            let number = |param: &'static str| {
                raw.trim()
                    .parse::<f64>()
                    .map_err(|_| bad(param, format!("'{param}' must be a number, got '{raw}'")))
            };
            match name {
                "time_of_generation_min" | "time_of_generation_max" => {}
                "route" => q.route = Some(raw.clone()),
                "total_units_min" => q.total_units.min = Some(number("total_units_min")?),
                "total_units_max" => q.total_units.max = Some(number("total_units_max")?),
                "prompt_token_min" => q.prompt_tokens.min = Some(number("prompt_token_min")?),
                "prompt_token_max" => q.prompt_tokens.max = Some(number("prompt_token_max")?),
                "completion_token_min" => {
                    q.completion_tokens.min = Some(number("completion_token_min")?)
                }
                "completion_token_max" => {
                    q.completion_tokens.max = Some(number("completion_token_max")?)
                }
                "cost_min" => q.cost_cents.min = Some(number("cost_min")?),
                "cost_max" => q.cost_cents.max = Some(number("cost_max")?),
                "status_code" => {
                    q.status_codes = list(raw)
                        .iter()
                        .map(|c| {
                            c.parse::<i64>().map_err(|_| {
                                bad(
                                    "status_code",
                                    format!("'status_code' must be comma-separated HTTP statuses, got '{c}'"),
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                "virtual_keys" => q.virtual_keys = list(raw),
                "configs" => q.configs = list(raw),
                // `provider__model`; deja logs the model asked for, so the provider part is not
                // compared.
                "ai_org_model" => {
                    q.models = list(raw)
                        .into_iter()
                        .map(|m| m.rsplit("__").next().unwrap_or_default().to_owned())
                        .collect();
                }
                "cache_status" => {
                    q.cache_statuses = list(raw).iter().map(|c| cache_label(c)).collect()
                }
                _ if IGNORED.contains(&name) => {}
                _ if UNSUPPORTED.contains(&name) => {
                    return Err(bad(
                        "query",
                        format!(
                            "'{name}' is not supported: deja does not record what it filters on"
                        ),
                    ));
                }
                _ => {
                    return Err(bad(
                        "query",
                        format!("'{name}' is not a known analytics parameter"),
                    ));
                }
            }
        }
        Ok(q)
    }

    /// Whether `row` passes every filter; `cost_cents` is what the row cost.
    pub fn keeps(&self, row: &LogRecord, cost_cents: f64) -> bool {
        let any =
            |wanted: &[String], value: &str| wanted.is_empty() || wanted.iter().any(|w| w == value);
        row.at >= self.from
            && row.at <= self.to
            && self.route.as_ref().is_none_or(|r| *r == row.route)
            && self.total_units.holds(row.tokens as f64)
            && self.prompt_tokens.holds(row.prompt_tokens as f64)
            && self.completion_tokens.holds(row.completion_tokens as f64)
            && self.cost_cents.holds(cost_cents)
            && (self.status_codes.is_empty() || self.status_codes.contains(&row.status))
            && any(&self.virtual_keys, &row.virtual_key)
            && any(&self.configs, &row.config)
            && any(&self.models, &row.model)
            && any(&self.cache_statuses, &row.cache_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const WINDOW: [(&str, &str); 2] = [
        ("time_of_generation_min", "2026-11-27T00:00:00Z"),
        ("time_of_generation_max", "2026-11-27T01:00:00.000Z"),
    ];

    #[test]
    fn times_parse_in_the_shapes_clients_send() {
        let q = AnalyticsQuery::parse(&params(&WINDOW)).unwrap();
        assert_eq!(q.to - q.from, 3_600_000);
        assert_eq!(format_time(q.from), "2026-11-27T00:00:00.000Z");
        assert_eq!(parse_time("t", "2026-11-27").unwrap(), q.from);
        assert_eq!(parse_time("t", &q.from.to_string()).unwrap(), q.from);
        let e = parse_time("time_of_generation_min", "yesterday").unwrap_err();
        assert!(e.to_string().contains("ISO 8601"), "{e}");
    }

    #[test]
    fn missing_times_unknown_and_unsupported_filters_are_refused_by_name() {
        let e = AnalyticsQuery::parse(&params(&WINDOW[..1])).unwrap_err();
        assert!(e.to_string().contains("time_of_generation_max"), "{e}");
        for (name, says) in [
            ("metadata", "not supported"),
            ("colour", "not a known"),
            ("status_code", "HTTP statuses"),
            ("cost_min", "number"),
        ] {
            let mut p = params(&WINDOW);
            p.insert(name.to_owned(), "x".to_owned());
            let e = AnalyticsQuery::parse(&p).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains(says), "{e}");
        }
        let mut p = params(&WINDOW);
        p.insert("workspace_slug".to_owned(), "default".to_owned());
        assert!(AnalyticsQuery::parse(&p).is_ok());
    }

    #[test]
    fn filters_keep_only_matching_rows() {
        let mut p = params(&WINDOW);
        for (k, v) in [
            ("status_code", "200,201"),
            ("cache_status", "SEMANTIC HIT,HIT"),
            ("ai_org_model", "lingyi__yi-lightning"),
            ("configs", "pc-01ai-retry-123"),
            ("total_units_min", "10"),
            ("cost_max", "1"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        let q = AnalyticsQuery::parse(&p).unwrap();
        let row = LogRecord {
            at: q.from + 1,
            status: 200,
            cache_status: "semantic_hit".to_owned(),
            model: "yi-lightning".to_owned(),
            config: "pc-01ai-retry-123".to_owned(),
            tokens: 10,
            ..LogRecord::default()
        };
        assert!(q.keeps(&row, 0.5));
        assert!(!q.keeps(&row, 2.0), "cost over cost_max");
        for other in [
            LogRecord {
                status: 503,
                ..row.clone()
            },
            LogRecord {
                cache_status: "miss".to_owned(),
                ..row.clone()
            },
            LogRecord {
                model: "yi-large".to_owned(),
                ..row.clone()
            },
            LogRecord {
                config: String::new(),
                ..row.clone()
            },
            LogRecord {
                tokens: 9,
                ..row.clone()
            },
            LogRecord {
                at: q.to + 1,
                ..row.clone()
            },
        ] {
            assert!(!q.keeps(&other, 0.5), "{other:?}");
        }
    }
}
