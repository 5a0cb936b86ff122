//! The request log's writer: `finish` hands each request's record to a bounded queue (never
//! waiting: when the queue is full the record is dropped and counted), and one task writes the
//! queue to the store in batches, reads `usage` from the answers there, and prunes old rows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::LogConfig;
use crate::metrics::Metrics;
use crate::store::logs::LogRecord;
use crate::store::{Store, now_ms};

/// Most records written in one transaction.
const BATCH: usize = 200;
/// How long the writer gathers rows after the first of a batch that is not yet full.
const LINGER: Duration = Duration::from_millis(20);
/// How often old rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A record on its way to the store, with the bodies it may need.
pub struct Draft {
    /// The row, `tokens` still 0.
    pub record: LogRecord,
    /// The answer, to read `usage` from (and keep, with `bodies`).
    pub answer: Option<Bytes>,
    /// The request, kept only with `bodies`.
    pub prompt: Option<Bytes>,
    /// A streamed answer's chunk that carried `usage`, read when there is no `answer`.
    pub stream_usage: Option<Bytes>,
}

/// The queue's sending side, and its receiving side until the writer takes it.
pub struct RequestLog {
    sender: mpsc::Sender<Draft>,
    receiver: Mutex<Option<mpsc::Receiver<Draft>>>,
    metrics: Arc<Metrics>,
    config: LogConfig,
}

impl RequestLog {
    /// A logger whose queue holds `config.queue` records.
    pub fn new(config: &LogConfig, metrics: Arc<Metrics>) -> Self {
        let (sender, receiver) = mpsc::channel(config.queue);
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            metrics,
            config: config.clone(),
        }
    }

    /// Whether request bodies are kept.
    pub fn bodies(&self) -> bool {
        self.config.bodies
    }

    /// Queues a record without waiting; a full queue drops it.
    pub fn record(&self, draft: Draft) {
        if self.sender.try_send(draft).is_err() {
            self.metrics.request_log("dropped", 1);
        }
    }

    /// Writes queued records until the process ends; prunes rows past the retention.
    pub async fn run(self: Arc<Self>, store: Store) {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut receiver) = receiver else {
            return;
        };
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                received = receiver.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        return;
                    }
                    // Under light traffic, rows that follow within LINGER join this commit: one
                    // commit and one wake of the database thread per LINGER, not per request (at
                    // one connection that was 40% of the gateway's CPU a request). A full batch
                    // is written at once, so heavy traffic is never held back. Rows still
                    // gathering when deja stops are lost, as rows still queued always were.
                    if received < BATCH {
                        tokio::time::sleep(LINGER).await;
                        while batch.len() < BATCH {
                            let Ok(draft) = receiver.try_recv() else { break };
                            batch.push(draft);
                        }
                    }
                    let rows: Vec<LogRecord> = batch.drain(..).map(|p| self.finish(p)).collect();
                    match store.insert_logs(&rows).await {
                        Ok(()) => self.metrics.request_log("written", rows.len() as u64),
                        Err(e) => {
                            tracing::warn!(error = %e, rows = rows.len(), "request log write failed; rows dropped");
                            self.metrics.request_log("dropped", rows.len() as u64);
                        }
                    }
                }
                _ = prune.tick() => {
                    let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
                    match store.prune_logs(now_ms().saturating_sub(retention)).await {
                        Ok(n) if n > 0 => tracing::info!(rows = n, "request log pruned"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "request log pruning failed"),
                    }
                }
            }
        }
    }

    fn finish(&self, draft: Draft) -> LogRecord {
        let mut record = draft.record;
        if let Some(usage) = draft
            .answer
            .as_ref()
            .or(draft.stream_usage.as_ref())
            .and_then(|a| serde_json::from_slice::<serde_json::Value>(a).ok())
            .and_then(|mut v| v.get_mut("usage").map(serde_json::Value::take))
        {
            let count = |field: &str| usage.get(field).and_then(serde_json::Value::as_i64);
            record.tokens = count("total_tokens").unwrap_or(0);
            record.prompt_tokens = count("prompt_tokens").unwrap_or(0);
            record.completion_tokens = count("completion_tokens").unwrap_or(0);
        }
        if self.config.bodies {
            let text = |b: &Bytes| truncated(b, self.config.max_body_bytes);
            record.prompt = draft.prompt.as_ref().map(text);
            record.answer = draft.answer.as_ref().map(text);
        }
        record
    }
}

/// `body` as text of at most `max` bytes of it, cut on a character boundary with the cut
/// marked, so one huge prompt or answer cannot fill the store.
fn truncated(body: &[u8], max: usize) -> String {
    if body.len() <= max {
        return String::from_utf8_lossy(body).into_owned();
    }
    // Back off to the start of a character (at most 3 bytes in UTF-8).
    let mut cut = max;
    while cut > 0
        && body
            .get(cut)
            .is_some_and(|b| b & 0b1100_0000 == 0b1000_0000)
    {
        cut -= 1;
    }
    let mut text = String::from_utf8_lossy(&body[..cut]).into_owned();
    text.push_str(&format!("…[truncated {} bytes]", body.len() - cut));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft {
            record: LogRecord {
                id: "r".to_owned(),
                endpoint: "chat.completions".to_owned(),
                route: "default".to_owned(),
                cache_status: "miss".to_owned(),
                attempts: 1,
                status: 200,
                latency_ms: 1.0,
                ..LogRecord::default()
            },
            answer: Some(Bytes::from_static(
                br#"{"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}"#,
            )),
            prompt: Some(Bytes::from_static(b"{}")),
            stream_usage: None,
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        let config = LogConfig {
            queue: 1,
            ..LogConfig::default()
        };
        let logger = RequestLog::new(&config, Arc::clone(&metrics));
        logger.record(draft());
        logger.record(draft());
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("deja_request_log_records_total{result=\"dropped\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn tokens_come_from_usage_and_bodies_only_when_asked() {
        let metrics = Arc::new(Metrics::new());
        let quiet = RequestLog::new(&LogConfig::default(), Arc::clone(&metrics));
        let row = quiet.finish(draft());
        assert_eq!(
            (row.tokens, row.prompt_tokens, row.completion_tokens),
            (42, 30, 12)
        );
        assert_eq!(row.prompt, None);
        let verbose = RequestLog::new(
            &LogConfig {
                bodies: true,
                ..LogConfig::default()
            },
            metrics,
        );
        let row = verbose.finish(draft());
        assert_eq!(row.prompt.as_deref(), Some("{}"));
        assert!(row.answer.unwrap().contains("42"));
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary_and_marked() {
        assert_eq!(truncated(b"short", 8), "short");
        assert_eq!(truncated(b"exactly8", 8), "exactly8");
        assert_eq!(truncated(b"0123456789", 4), "0123…[truncated 6 bytes]");
        // "é" is two bytes; a cut inside it backs off to before it.
        let text = "aé".repeat(3);
        assert_eq!(truncated(text.as_bytes(), 2), "a…[truncated 8 bytes]");
        assert_eq!(truncated("数据".as_bytes(), 4), "数…[truncated 3 bytes]");
        let verbose = RequestLog::new(
            &LogConfig {
                bodies: true,
                max_body_bytes: 16,
                ..LogConfig::default()
            },
            Arc::new(Metrics::new()),
        );
        let huge = Draft {
            prompt: Some(Bytes::from(vec![b'p'; 100_000])),
            ..draft()
        };
        let row = verbose.finish(huge);
        assert_eq!(
            row.prompt.as_deref(),
            Some("pppppppppppppppp…[truncated 99984 bytes]")
        );
        assert!(row.answer.unwrap().ends_with("bytes]"));
        assert_eq!(row.tokens, 42, "usage is read from the whole answer first");
    }

    #[test]
    fn a_stream_is_counted_from_its_usage_chunk_which_is_not_kept_as_the_answer() {
        let verbose = RequestLog::new(
            &LogConfig {
                bodies: true,
                ..LogConfig::default()
            },
            Arc::new(Metrics::new()),
        );
        let streamed = Draft {
            stream_usage: draft().answer,
            answer: None,
            ..draft()
        };
        let row = verbose.finish(streamed);
        assert_eq!((row.tokens, row.completion_tokens), (42, 12));
        assert_eq!(row.answer, None);
    }
}
