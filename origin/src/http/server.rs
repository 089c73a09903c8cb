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
//!   refusals.
//!
//! On shutdown the listener closes, every connection finishes its current request, and the call
//! returns once all are closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
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
}

/// Serves `router` on `listener` until `shutdown` completes, then drains the connections.
pub async fn serve(
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
