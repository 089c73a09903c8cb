//! [`WorkQueue`]: blocking work (FAISS searches) on a fixed set of threads behind a bounded queue
//! that sheds load at once and skips work nobody waits for.
//!
//! Why not `tokio::task::spawn_blocking`: its queue is unbounded and a task cannot be taken back.
//! When requests arrive faster than FAISS answers, the backlog grows; a request whose deadline
//! fires drops only its handle, its search still runs later, and every later request waits behind
//! searches for callers that have gone: real time stays down after the load has gone. Here:
//! - the queue holds at most `capacity` tasks; one more is refused at once ([`QueueError::Full`])
//!   and the request path serves its fallback list;
//! - a task whose caller has gone (its deadline fired, the client hung up) is skipped when a
//!   thread reaches it, and one whose deadline has passed is answered [`QueueError::Expired`]
//!   without running: dead work costs a channel read, not a search;
//! - a panic in the work is caught: that caller gets [`QueueError::Stopped`], the thread goes on.
//!
//! `cascade_work_queue_tasks_total{queue,outcome}` counts each task once (`done`, `abandoned`,
//! `expired`, `refused`, `panicked`); `cascade_work_queue_depth{queue}` is the queue's length.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::oneshot;

/// Why work was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue is full: load is shed.
    #[error("queue full")]
    Full,
    /// The deadline passed before a thread reached the task.
    #[error("deadline passed in the queue")]
    Expired,
    /// The work panicked, or the threads are gone.
    #[error("worker stopped")]
    Stopped,
}

/// What happened to one task (the metric's `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Abandoned,
    Expired,
    Panicked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Abandoned => "abandoned",
            Outcome::Expired => "expired",
            Outcome::Panicked => "panicked",
        }
    }
}

/// The queue's metrics (unregistered ones for tests; `crate::metrics` registers the origin's).
#[derive(Clone)]
pub struct QueueMetrics {
    /// `cascade_work_queue_tasks_total{queue,outcome}`.
    pub tasks: IntCounterVec,
    /// `cascade_work_queue_depth{queue}`.
    pub depth: IntGaugeVec,
}

impl Default for QueueMetrics {
    fn default() -> Self {
        QueueMetrics {
            tasks: IntCounterVec::new(
                Opts::new("cascade_work_queue_tasks_total", "Blocking tasks by queue and outcome"),
                &["queue", "outcome"],
            )
            .unwrap_or_else(|_| unreachable!("static metric definition")),
            depth: IntGaugeVec::new(Opts::new("cascade_work_queue_depth", "Blocking tasks waiting"), &["queue"])
                .unwrap_or_else(|_| unreachable!("static metric definition")),
        }
    }
}

/// A task: runs (or skips) itself and says which.
type Task = Box<dyn FnOnce() -> Outcome + Send>;

/// Blocking work on `threads` threads behind a queue of `capacity` tasks.
pub struct WorkQueue {
    name: &'static str,
    sender: Sender<Task>,
    metrics: QueueMetrics,
}

impl WorkQueue {
    /// Starts `threads` threads named after `name` (also the metrics' `queue` label).
    pub fn start(name: &'static str, threads: usize, capacity: usize, metrics: QueueMetrics) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::bounded::<Task>(capacity.max(1));
        for index in 0..threads.max(1) {
            let (receiver, metrics) = (receiver.clone(), metrics.clone());
            std::thread::Builder::new().name(format!("{name}-{index}")).spawn(move || {
                // Ends when the queue is dropped (every sender gone).
                while let Ok(task) = receiver.recv() {
                    metrics.depth.with_label_values(&[name]).set(receiver.len() as i64);
                    let outcome = catch_unwind(AssertUnwindSafe(task)).unwrap_or(Outcome::Panicked);
                    if outcome == Outcome::Panicked {
                        tracing::error!(queue = name, "a blocking task panicked; the thread goes on");
                    }
                    metrics.tasks.with_label_values(&[name, outcome.as_str()]).inc();
                }
            })?;
        }
        Ok(WorkQueue { name, sender, metrics })
    }

    /// Runs `work` on a queue thread unless the queue is full, or `deadline` passes, or the caller
    /// stops waiting (drops this future) before a thread reaches it.
    pub async fn run<T, F>(&self, deadline: Instant, work: F) -> Result<T, QueueError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, QueueError>>();
        let task: Task = Box::new(move || {
            if reply.is_closed() {
                return Outcome::Abandoned;
            }
            if Instant::now() >= deadline {
                let _ = reply.send(Err(QueueError::Expired));
                return Outcome::Expired;
            }
            let _ = reply.send(Ok(work()));
            Outcome::Done
        });
        match self.sender.try_send(task) {
            Ok(()) => self.metrics.depth.with_label_values(&[self.name]).set(self.sender.len() as i64),
            Err(TrySendError::Full(_)) => {
                self.metrics.tasks.with_label_values(&[self.name, "refused"]).inc();
                return Err(QueueError::Full);
            }
            Err(TrySendError::Disconnected(_)) => return Err(QueueError::Stopped),
        }
        answer.await.unwrap_or(Err(QueueError::Stopped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_work_is_skipped_so_the_queue_recovers_after_overload() {
        let metrics = QueueMetrics::default();
        let queue = Arc::new(WorkQueue::start("test", 1, 32, metrics.clone()).unwrap());
        let ran = Arc::new(AtomicUsize::new(0));
        // 200 callers, each giving up after 20 ms, against work that takes 10 ms each: 2 s of work.
        let callers: Vec<_> = (0..200)
            .map(|_| {
                let (queue, ran) = (Arc::clone(&queue), Arc::clone(&ran));
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_millis(20);
                    let work = queue.run(deadline, move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                    });
                    tokio::time::timeout_at(deadline.into(), work).await
                })
            })
            .collect();
        let mut refused = 0;
        for caller in callers {
            if let Ok(Err(QueueError::Full)) = caller.await.unwrap() {
                refused += 1;
            }
        }
        assert!(refused >= 100, "a full queue refuses at once: {refused} refused");
        // The flood is over: a new caller is served at once, not after the backlog.
        let started = Instant::now();
        let answer = queue.run(Instant::now() + Duration::from_secs(5), || 7).await;
        assert_eq!(answer, Ok(7));
        assert!(started.elapsed() < Duration::from_millis(500), "recovered in {:?}", started.elapsed());
        assert!(ran.load(Ordering::SeqCst) < 20, "dead work was skipped: {} ran", ran.load(Ordering::SeqCst));
        let skipped = metrics.tasks.with_label_values(&["test", "abandoned"]).get()
            + metrics.tasks.with_label_values(&["test", "expired"]).get();
        assert!(skipped > 0, "skips are counted");
    }

    #[tokio::test]
    async fn a_panic_costs_its_caller_not_the_thread() {
        let queue = WorkQueue::start("test", 1, 4, QueueMetrics::default()).unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(queue.run(far, || -> u8 { panic!("faiss exploded (simulated)") }).await, Err(QueueError::Stopped));
        assert_eq!(queue.run(far, || 1).await, Ok(1));
        assert_eq!(queue.run(Instant::now(), || 2).await, Err(QueueError::Expired));
    }
}
