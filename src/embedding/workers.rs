//! The threads embeddings run on: a few of their own, below the threads that serve requests
//! (`SCHED_IDLE`). On a busy machine the model then gets what the
//! request path leaves: a forwarded request or an exact hit is never queued behind a transformer
//! pass for a core, and lookups that cannot get their embedding in time are shed instead.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::{EmbedError, Embedded, Embedder};

/// Puts the calling thread in `SCHED_IDLE`: the kernel gives it a sliver of a busy core (weight
/// 3 against a normal thread's 1024) and preempts it at once for any normal thread that wakes.
/// Only this thread: with `threads_per_session` above 1, ONNX Runtime's own pool threads (made
/// when the session is built) keep normal priority. Nice 10, tried first, still let the
/// model delay the request path: p99 of a non-hit at 3x the embedding capacity was 12-17 ms above
/// the provider's, against 10.5-11.1 ms in `SCHED_IDLE` (`cargo bench --bench resilience`, shed).
fn run_only_when_idle() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "embedding thread runs at normal priority");
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of embedding threads.
pub struct EmbedWorkers {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl EmbedWorkers {
    /// Starts `threads` threads; they end when the pool is dropped.
    pub fn start(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("deja-embed-{i}"))
                .spawn(move || {
                    run_only_when_idle();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking model call fails its own request (its sender is dropped),
                        // not the thread: the pool keeps its size.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            tracing::error!("an embedding panicked; its lookup goes on without it");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start an embedding thread");
            }
        }
        Self {
            jobs: Mutex::new(jobs),
        }
    }

    /// Embeds `text` on a pool thread, holding `held` (a session permit) until it is done even
    /// if the caller stops waiting; returns the vectors and how long the model ran.
    pub async fn embed(
        &self,
        embedder: Arc<dyn Embedder>,
        text: String,
        held: impl Send + 'static,
    ) -> Result<(Result<Vec<Embedded>, EmbedError>, std::time::Duration), EmbedError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let ran = std::time::Instant::now();
            let embedded = embedder.embed_blocking(&[&text]);
            let ran = ran.elapsed();
            // Freed before the answer goes: a low-priority thread may wait long for the CPU
            // after it, and the session would look busy to every lookup meanwhile.
            drop(held);
            let _ = done.send((embedded, ran));
        });
        self.jobs
            .lock()
            .map_err(|_| EmbedError::Pool)?
            .send(job)
            .map_err(|_| EmbedError::Pool)?;
        result.await.map_err(|_| EmbedError::Pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, unix::thread_schedule_policy,
    };

    #[test]
    fn embedding_threads_run_in_sched_idle() {
        let policy = std::thread::spawn(|| {
            run_only_when_idle();
            thread_schedule_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        // The caller's own thread is untouched.
        assert_eq!(
            thread_schedule_policy().unwrap(),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }
}
