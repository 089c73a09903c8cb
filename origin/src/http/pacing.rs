//! Pacing callers that ignore `Retry-After`: a connection refused by admission control several
//! times in a row has its next request read only after a pause. Shedding before the HTTP stack.
//!
//! Why: under a flood of callers that retry at once (the fault suite's 3x overload: 192 callers in
//! closed loops), each refusal is cheap (a prebuilt 503, [`super::middleware::shed`]) but there are
//! thousands a second, and reading, parsing and answering them, with the kernel's TCP work, takes
//! the cores the admitted requests need. Measured with the load generator pinned to the other core
//! (origin and Redis alone on one), the admitted requests' p99 seen by the client was 118-128 ms
//! against the origin's own 97-99 ms: requests waiting in the socket for a core the refusals held.
//!
//! So a connection refused `serving.pace_after_refusals` ([`PACE_AFTER`]) times in a row, with no
//! admission between, is not read for a pause that doubles from [`FIRST_PAUSE`] up to the
//! `Retry-After` the refusals asked for ([`LONGEST_PAUSE`], 1 s). Its 503s are still answered at once; only its next request waits, in
//! the kernel's buffer, costing the origin nothing. A caller that honours `Retry-After` never
//! meets it, one admission resets the count, and a caller that opens a new connection instead
//! starts from zero but pays a handshake for it.
//!
//! Off by default: measured under the fault suite's 3x flood it answers 6-18x more requests within
//! the deadline, but a caller that shares a connection with the flood (or floods itself) waits out
//! the pause before its request is read, so the p99 of admitted answers seen by callers rose from
//! 121-386 ms to 0.46-1.06 s (README, "Failure behaviour"). Turn it on where one connection is
//! one client, e.g. internal callers with their own pools.
//!
//! The accept loop ([`super::server`]) wraps each socket in [`Paced`] and runs the connection
//! inside [`scope`], so the middleware reaches its connection's [`Pace`] through a task-local
//! ([`refused`], [`admitted`]): hyper polls the router's future inside the connection's task.
//! Outside a paced connection (tests driving the router with `oneshot`) both do nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Refusals in a row before a connection is paced: the value measured (README, "Failure
/// behaviour"); `serving.pace_after_refusals` is 0, off, by default.
pub const PACE_AFTER: u32 = 4;
/// The first pause; each further refusal in a row doubles it.
pub const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause: the `Retry-After` (1 s) every refusal carries.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// One connection's refusals in a row and the end of its pause.
#[derive(Debug)]
pub struct Pace {
    /// Refusals in a row before pausing; 0: never.
    after: u32,
    /// When the connection was accepted: pause ends are kept as milliseconds after it.
    opened: Instant,
    refused_in_a_row: AtomicU32,
    /// The pause's end in ms after `opened`, plus one; 0 when not paused.
    paused_until_ms: AtomicU64,
}

impl Pace {
    /// A new connection's, paused after `after` refusals in a row (0: never): no refusals yet.
    pub fn new(after: u32) -> Self {
        Pace { after, opened: Instant::now(), refused_in_a_row: AtomicU32::new(0), paused_until_ms: AtomicU64::new(0) }
    }

    /// A refusal: the pause it starts (none for the first `after` - 1 in a row).
    pub fn refused(&self) -> Option<Duration> {
        if self.after == 0 {
            return None;
        }
        let in_a_row = self.refused_in_a_row.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let doublings = in_a_row.checked_sub(self.after)?;
        let pause = FIRST_PAUSE.saturating_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX)).min(LONGEST_PAUSE);
        let until = (Instant::now() + pause).duration_since(self.opened).as_millis();
        self.paused_until_ms.store(u64::try_from(until).unwrap_or(u64::MAX).saturating_add(1), Ordering::Relaxed);
        Some(pause)
    }

    /// An admission: the count starts again.
    pub fn admitted(&self) {
        if self.refused_in_a_row.load(Ordering::Relaxed) != 0 {
            self.refused_in_a_row.store(0, Ordering::Relaxed);
        }
    }

    /// The end of the pause, when one was started and not yet waited out.
    fn paused_until(&self) -> Option<Instant> {
        match self.paused_until_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.opened + Duration::from_millis(ms - 1)),
        }
    }

    fn resume(&self) {
        self.paused_until_ms.store(0, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// The pace of the connection whose task is running.
    static CONNECTION: Arc<Pace>;
}

/// Runs `connection` with `pace` as its connection's, for [`refused`] and [`admitted`].
pub fn scope<F: Future>(pace: Arc<Pace>, connection: F) -> impl Future<Output = F::Output> {
    CONNECTION.scope(pace, connection)
}

/// The request being answered was refused (nothing outside a paced connection).
pub fn refused() {
    let _ = CONNECTION.try_with(|pace| pace.refused());
}

/// The request being answered was admitted (nothing outside a paced connection).
pub fn admitted() {
    let _ = CONNECTION.try_with(|pace| pace.admitted());
}

/// A socket that is not read while its connection's pace says pause; writes pass through.
pub struct Paced<S> {
    inner: S,
    pace: Arc<Pace>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> Paced<S> {
    /// `inner`, read at `pace`.
    pub fn new(inner: S, pace: Arc<Pace>) -> Self {
        Paced { inner, pace, sleep: None }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(until) = this.pace.paused_until() {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if sleep.deadline() != until {
                sleep.as_mut().reset(until);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
            this.pace.resume();
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_start_after_refusals_in_a_row_double_and_stop_at_retry_after() {
        let pace = Pace::new(PACE_AFTER);
        let pauses: Vec<Option<Duration>> = (0..10).map(|_| pace.refused()).collect();
        let ms = |p: Option<Duration>| p.map(|d| d.as_millis());
        assert_eq!(pauses[..3].iter().map(|p| ms(*p)).collect::<Vec<_>>(), vec![None, None, None]);
        assert_eq!(
            pauses[3..].iter().map(|p| ms(*p)).collect::<Vec<_>>(),
            vec![Some(50), Some(100), Some(200), Some(400), Some(800), Some(1000), Some(1000)]
        );
        assert!(pace.paused_until().is_some());
        // One admission and the count starts again (the pause already started is waited out).
        pace.admitted();
        assert_eq!(pace.refused(), None);
        pace.resume();
        assert!(pace.paused_until().is_none());
    }

    #[tokio::test]
    async fn outside_a_paced_connection_nothing_happens() {
        refused();
        admitted();
        let off = Pace::new(0);
        assert!((0..10).all(|_| off.refused().is_none()), "0 turns pacing off");
        let pace = Arc::new(Pace::new(PACE_AFTER));
        let inside = scope(Arc::clone(&pace), async {
            for _ in 0..PACE_AFTER {
                refused();
            }
        });
        inside.await;
        assert!(pace.paused_until().is_some(), "the scope's refusals reached its pace");
    }
}
