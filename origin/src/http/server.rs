//! The accept loop: HTTP/1.1 connections served by hyper with the limits `axum::serve` does not
//! set, and a graceful stop.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never runs, and it accepts
//! connections without limit: a client that opens connections and sends headers one byte a minute
//! (slowloris) holds a task and a socket each, forever. Here:
//! - **header-read timeout** (`serving.header_read_timeout_ms`): a request's head must arrive
//!   within it, and an idle keep-alive connection is closed after it (hyper starts the same timer
//!   while it waits for the next head);
//! - **connection cap** (`serving.max_connections`): past it, the loop stops accepting until a
//!   connection closes (new ones wait in the kernel's backlog); the cap keeps the origin inside its
//!   file descriptor limit;
//! - the request timeout is the router's ([`super::middleware::time_limit`]), so it covers the
//!   handler, not the socket;
//! - **pacing** ([`super::pacing`], off unless `serving.pace_after_refusals` is set): a connection
//!   refused by admission control several times in a row is not read for a while (its next request
//!   waits in the kernel), so callers that ignore `Retry-After` cannot keep the cores busy with
//!   refusals;
//! - **a front runtime** (off unless `serving.front_threads` is set; `serving.front_nice`):
//!   accepting, reading, admission control and writing answers run on threads of their own, at a
//!   lower scheduling priority; an admitted request is handed to the main runtime ([`hand_over`]), where the
//!   stores, the batcher and every other task live. Under a flood of requests that will be refused,
//!   the refusals then queue behind each other on the front, not in front of admitted requests'
//!   wake-ups (a request wakes up at each Redis reply, FAISS search and batch), and the kernel
//!   gives the admitted work the cores first. The hand-over costs two cross-thread wake-ups per
//!   request, which is why it is off by default: L1 hits, a few microseconds of work each, lost
//!   20-50% of their throughput in the measurement (README, "Failure behaviour").
//!
//! On shutdown the listener closes, every connection finishes its current request, and the call
//! returns once all are closed.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// What one server accepts.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Longest wait for a request's head (and for the next one on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Refusals in a row before a connection is paced ([`super::pacing`]); 0: never.
    pub pace_after_refusals: u32,
    /// Threads of the front runtime; 0: connections are served on the caller's runtime.
    pub front_threads: usize,
    /// The front threads' nice value (Linux; 0 to 19, higher yields the cores to admitted work).
    pub front_nice: u32,
}

thread_local! {
    /// On a front thread: the runtime admitted requests are handed to.
    static WORK: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Middleware, right inside admission control: on a front thread, runs the rest of the request
/// on the main runtime and waits for its answer (elsewhere, in place). The handed-over task is
/// aborted if the connection goes away first, as the request would have been without the hop; a
/// panic in it is answered 500 `internal` rather than ending the connection.
pub async fn hand_over(request: Request, next: Next) -> Response {
    let Some(work) = WORK.with(|work| work.borrow().clone()) else {
        return next.run(request).await;
    };
    let mut task = AbortOnDrop(work.spawn(next.run(request)));
    match (&mut task.0).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "request task failed");
            super::error::ApiError::Internal.into_response()
        }
    }
}

/// Aborts the task when dropped (a no-op once it has finished).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains the connections. With
/// `limits.front_threads` set, the connections are served on a front runtime of their own and
/// admitted requests handed back to the caller's ([`hand_over`], which `router` must contain).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if limits.front_threads == 0 {
        return accept_loop(listener, router, limits, shutdown).await;
    }
    // A listener belongs to the reactor it was registered with: move it to the front's.
    let listener = listener.into_std()?;
    // From here to `shutdown_background` nothing returns early: a runtime dropped on a runtime's
    // thread panics.
    let front = front_runtime(limits.front_threads, limits.front_nice, Handle::current())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut served = front.spawn(async move {
        let listener = TcpListener::from_std(listener)?;
        accept_loop(listener, router, limits, async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::pin!(shutdown);
    let served = tokio::select! {
        served = &mut served => served,
        () = &mut shutdown => {
            let _ = stop.send(());
            served.await
        }
    };
    front.shutdown_background();
    served.map_err(std::io::Error::other)?
}

/// The front runtime: `threads` workers named `cascade-front`, each at `nice`, each knowing `work`.
fn front_runtime(threads: usize, nice: u32, work: Handle) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("cascade-front")
        .enable_all()
        .on_thread_start(move || {
            WORK.with(|slot| *slot.borrow_mut() = Some(work.clone()));
            lower_priority(nice);
        })
        .build()
}

/// Sets this thread's nice value (on Linux a thread's own; raising it needs no privilege).
fn lower_priority(nice: u32) {
    if nice == 0 {
        return;
    }
    let nice = i32::try_from(nice).unwrap_or(19);
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(nice, %error, "cannot lower the front threads' priority");
    }
}

/// Accepts and serves connections on the current runtime until `shutdown`, then drains them.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (socket, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted: go on
                // after a breath rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let pace = Arc::new(super::pacing::Pace::new(limits.pace_after_refusals));
        let socket = super::pacing::Paced::new(socket, Arc::clone(&pace));
        let service = TowerToHyperService::new(
            router.clone().map_request(|request: Request<Incoming>| request.map(axum::body::Body::new)),
        );
        let mut stopping = stopping.clone();
        let stop_requested = async move {
            // The guard `wait_for` returns is not `Send`: drop it before anything else awaits.
            let _ = stopping.wait_for(|stop| *stop).await.map(|_| ());
        };
        tokio::spawn(super::pacing::scope(pace, async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(socket), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop_requested => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        }));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections closed.
    let _all = slots.acquire_many(u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: ServerLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        (address, stop)
    }

    /// Reads until the server closes the connection (or `limit` passes): what it sent.
    async fn read_until_closed(socket: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
        let mut received = Vec::new();
        let read = tokio::time::timeout(limit, socket.read_to_end(&mut received)).await;
        read.ok().map(|_| String::from_utf8_lossy(&received).into_owned())
    }

    /// One request on a connection of its own: the whole answer.
    async fn fetch(address: std::net::SocketAddr, path: &str) -> String {
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        read_until_closed(&mut socket, Duration::from_secs(5)).await.unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_front_runtime_reads_and_the_main_runtime_works_and_a_panic_is_answered_500() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // The handler says where it ran; the outer layer (admission control's place) where it did.
        let router = Router::new()
            .route("/", get(|| async { std::thread::current().name().unwrap_or_default().to_string() }))
            .route("/panic", get(|| async { panic!("a handler panicked") as String }))
            .layer(axum::middleware::from_fn(hand_over))
            .layer(axum::middleware::from_fn(|request: Request, next: Next| async move {
                let thread = std::thread::current().name().unwrap_or_default().to_string();
                let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(-100);
                let mut response = next.run(request).await;
                let front = axum::http::HeaderValue::from_str(&format!("{thread} {nice}")).unwrap();
                response.headers_mut().insert("x-front", front);
                response
            }));
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 8,
            pace_after_refusals: 0,
            front_threads: 1,
            front_nice: 7,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        let answer = fetch(address, "/").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-front: cascade-front 7\r\n"), "read on a front thread at nice 7: {answer}");
        let worked_on = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
        assert!(!worked_on.is_empty() && worked_on != "cascade-front", "worked on the main runtime: {worked_on:?}");
        let panicked = fetch(address, "/panic").await;
        assert!(panicked.starts_with("HTTP/1.1 500") && panicked.contains("\"internal\""), "{panicked}");
        assert!(fetch(address, "/").await.starts_with("HTTP/1.1 200"), "the server goes on after a panic");
        // Shutdown ends the front runtime and returns.
        stop.send(()).unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "serve returned: {stopped:?}");
    }

    #[tokio::test]
    async fn a_connection_refused_again_and_again_is_read_only_after_a_pause() {
        use super::super::pacing::{FIRST_PAUSE, PACE_AFTER, refused};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        // Each call's time, seen by the handler: a refusal as admission control makes one.
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let router = Router::new().route(
            "/",
            get(move || {
                seen.lock().unwrap().push(std::time::Instant::now());
                refused();
                async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "overloaded") }
            }),
        );
        let limits = ServerLimits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 8,
            pace_after_refusals: PACE_AFTER,
            front_threads: 0,
            front_nice: 0,
        };
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        let requests = PACE_AFTER as usize + 1;
        for _ in 0..requests {
            socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut answer = Vec::new();
            while !answer.ends_with(b"overloaded") {
                let mut chunk = [0u8; 512];
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
                answer.extend_from_slice(&chunk[..n]);
            }
            assert!(
                answer.starts_with(b"HTTP/1.1 503"),
                "every refusal is answered: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), requests);
        // The handler ran for the PACE_AFTER-th refusal before the pause began, so the next request
        // cannot have been read before the pause ended: a lower bound, whatever the machine's load.
        let gap = calls[requests - 1] - calls[requests - 2];
        assert!(gap >= FIRST_PAUSE, "the request after {PACE_AFTER} refusals waited {gap:?}");
    }

    #[tokio::test]
    async fn a_slow_header_is_cut_off_and_connections_are_capped() {
        let limits = ServerLimits {
            header_read_timeout: Duration::from_millis(600),
            max_connections: 2,
            pace_after_refusals: 0,
            front_threads: 0,
            front_nice: 0,
        };
        let (address, _stop) = start(limits).await;
        // Slowloris: a request head that never ends.
        let mut slow = tokio::net::TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let closed = read_until_closed(&mut slow, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "the server closed the slow connection");
        assert!(started.elapsed() < Duration::from_secs(2), "within the timeout: {:?}", started.elapsed());

        // Two idle connections fill the cap; a third is not served until one closes.
        let first = tokio::net::TcpStream::connect(address).await.unwrap();
        let _second = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut third = tokio::net::TcpStream::connect(address).await.unwrap();
        third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut early = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(150), third.read(&mut early)).await;
        assert!(waited.is_err(), "no answer while the cap is reached");
        drop(first);
        let answer = read_until_closed(&mut third, Duration::from_secs(5)).await.unwrap_or_default();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
    }
}
