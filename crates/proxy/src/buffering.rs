//! `response_buffering` (nginx `proxy_buffering on`): the upstream response is read
//! ahead of a slow client, within a budget per response and one for the process.

use crate::handler::ReadTimeoutBody;
use crate::{Body, BoxError};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Bytes of one response that `response_buffering` holds at most before it
/// stops reading the upstream (nginx spills to temporary files instead).
const RESPONSE_BUFFER: usize = 16 * 1024 * 1024;

/// Bytes all buffered responses of the process hold at most (about twice that in
/// resident memory: a frame pins the read buffer it was cut from). Clients that open
/// no window (HTTP/2) or read nothing (HTTP/1.1) so cannot make memory grow with their
/// number. Past it, a response is read at its own client's pace, as without
/// buffering; it never waits for other clients to free the budget.
const RESPONSE_BUFFER_TOTAL: usize = 8 * 1024 * 1024;

/// Bytes of the process's budget in use: plain atomics (nothing ever waits for the
/// budget, so no semaphore and its lock per frame).
static BUFFERED_TOTAL: BufferBudget = BufferBudget(AtomicUsize::new(0));

struct BufferBudget(AtomicUsize);

impl BufferBudget {
    fn try_take(&self, n: usize) -> bool {
        let before = self.0.fetch_add(n, Ordering::Relaxed);
        if before + n > RESPONSE_BUFFER_TOTAL {
            self.0.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn give_back(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    fn available(&self) -> usize {
        RESPONSE_BUFFER_TOTAL.saturating_sub(self.0.load(Ordering::Relaxed))
    }
}

/// Below this much of the process's budget left, buffered responses go at their
/// client's pace (one upstream read, see `upstream::UPSTREAM_READ_BUF`).
const PACE_BELOW: usize = 64 * 1024;

/// The buffer budget a data frame takes (per response, and of the process's total).
fn buffered_len<E>(f: &Result<Frame<Bytes>, E>) -> usize {
    f.as_ref()
        .ok()
        .and_then(|f| f.data_ref())
        .map_or(0, |d| d.len().min(RESPONSE_BUFFER))
}

/// A buffered frame, and whether it holds part of the process's budget (otherwise it
/// is the one frame read at the client's pace).
type Buffered = (Result<Frame<Bytes>, BoxError>, bool);

/// `response_buffering` (nginx `proxy_buffering on`): read the upstream
/// response as fast as it comes, whatever the client's pace, so a slow client
/// does not hold the upstream connection.
pub(crate) fn buffer_response(mut upstream: ReadTimeoutBody) -> Body {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Buffered>();
    let budget = Arc::new(tokio::sync::Semaphore::new(RESPONSE_BUFFER));
    let pace = Arc::new(tokio::sync::Semaphore::new(1));
    let (b2, p2) = (budget.clone(), pace.clone());
    tokio::spawn(async move {
        loop {
            // With the process's budget spent, read the next frame only once the client
            // took the last one: no frame waits here.
            let mut paced = false;
            if BUFFERED_TOTAL.available() < PACE_BELOW {
                match p2.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return,
                }
                paced = true;
            }
            let Some(f) = upstream.frame().await else {
                return;
            };
            let n = buffered_len(&f);
            let stop = f.is_err();
            // Both are closed when the client is gone.
            match b2.acquire_many(n as u32).await {
                Ok(p) => p.forget(),
                Err(_) => return,
            }
            let counted = !paced
                && (BUFFERED_TOTAL.try_take(n)
                    || match p2.acquire().await {
                        Ok(p) => {
                            p.forget();
                            false
                        }
                        Err(_) => return,
                    });
            if tx.send((f, counted)).is_err() {
                if counted {
                    BUFFERED_TOTAL.give_back(n);
                }
                return;
            }
            if stop {
                return;
            }
        }
    });
    BufferedBody {
        rx,
        budget,
        pace,
        done: false,
    }
    .boxed_unsync()
}

struct BufferedBody {
    rx: tokio::sync::mpsc::UnboundedReceiver<Buffered>,
    budget: Arc<tokio::sync::Semaphore>,
    pace: Arc<tokio::sync::Semaphore>,
    done: bool,
}

impl hyper::body::Body for BufferedBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((f, counted))) => {
                let n = buffered_len(&f);
                self.budget.add_permits(n);
                if counted {
                    BUFFERED_TOTAL.give_back(n);
                } else {
                    self.pace.add_permits(1);
                }
                Poll::Ready(Some(f))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for BufferedBody {
    /// The client is gone: the reader stops, and what it buffered goes back to the
    /// process's budget.
    fn drop(&mut self) {
        self.budget.close();
        self.pace.close();
        self.rx.close();
        while let Ok((f, counted)) = self.rx.try_recv() {
            if counted {
                BUFFERED_TOTAL.give_back(buffered_len(&f));
            }
        }
    }
}
