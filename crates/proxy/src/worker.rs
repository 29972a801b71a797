//! The data plane's workers (nginx's model): `nginx_worker_processes` threads, each
//! running its own current-thread tokio runtime that accepts on every proxy listener and
//! serves the connections it accepted, with the tasks they spawn (upstream connections,
//! HTTP/2 streams), to the end. No task moves between threads, so there is no work-stealing
//! scheduler, cross-thread wake-up or poll-time statistics on the request path.
//!
//! Listeners: with the `reuseport` flag each worker gets its own `SO_REUSEPORT` socket
//! (nginx's `reuseport`: the kernel spreads connections by address hash); without it,
//! the workers poll one shared socket (nginx's default), so an idle worker takes the
//! next connection and the port stays exclusive to this process.
//!
//! The control plane (Admin API, status, configuration follower) stays on the node's
//! multi-thread runtime. Kept over serving on that runtime because the benchmark prefers
//! it (bench/RESULTS.md, "Proxy optimisations").

use std::cell::Cell;
use std::future::Future;

/// How long a stopping worker waits for its blocking tasks (`spawn_blocking`).
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// This thread's worker number, from 1; 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The current thread's worker number (1..=workers), or 0 outside the workers.
#[inline]
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// A running worker thread.
pub(crate) struct Worker {
    exit: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Worker {
    /// Runs `main` on `rt` in a new thread as worker `index` (from 1) until
    /// [`Worker::stop`]; the tasks still on `rt` then are dropped with it.
    pub(crate) fn spawn<F>(
        index: usize,
        rt: tokio::runtime::Runtime,
        main: F,
    ) -> std::io::Result<Worker>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (exit, exit_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("proxy-worker-{index}"))
            .spawn(move || {
                INDEX.with(|i| i.set(index));
                rt.block_on(async move {
                    tokio::spawn(main);
                    let _ = exit_rx.await;
                });
                // (a blocking task that hangs, say a log write, does not hold up the exit)
                rt.shutdown_timeout(BLOCKING_GRACE);
                let _ = done_tx.send(());
            })?;
        Ok(Worker {
            exit: Some(exit),
            done,
        })
    }

    /// Ends the worker's runtime (closing what is still open on it) and waits until
    /// its thread is done.
    pub(crate) async fn stop(mut self) {
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(());
        }
        let _ = self.done.await;
    }
}

/// A current-thread runtime for one worker.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
