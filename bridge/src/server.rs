//! The HTTP/1 connection loop around the router, with the limits that keep the bridge
//! answering under abuse: a client must send a whole request head within
//! `header_timeout` (hyper's header-read timeout); open connections are capped; and
//! connections that have not made an authenticated request yet ("anonymous") are capped
//! on their own, the oldest closed first when a new one arrives, so that half-sent
//! requests can never crowd out `/health` or a logged-in user. WebSocket upgrades are
//! handed to the router's handler and leave this loop's accounting once upgraded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The loop's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a whole request head.
    pub header_timeout: Duration,
    /// Open connections at most; past it new ones are closed at once.
    pub max_connections: usize,
    /// Anonymous connections at most; past it the oldest is closed.
    pub max_anonymous: usize,
    /// How long shutdown lets open requests finish.
    pub shutdown_timeout: Duration,
}

/// A connection's handle in request extensions: the auth guard marks it authenticated.
#[derive(Clone, Debug)]
pub struct ConnMark {
    id: u64,
    table: Arc<Table>,
    authenticated: Arc<AtomicBool>,
}

impl ConnMark {
    /// The connection made an authenticated request: it is no longer evicted to make room.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::Relaxed) {
            self.table.promote(self.id);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    open: usize,
    next_id: u64,
    anonymous: VecDeque<(u64, CancellationToken)>,
}

/// The open connections.
#[derive(Debug)]
struct Table {
    limits: Limits,
    inner: Mutex<Inner>,
}

/// A registered connection: dropping it removes it from the table.
struct Admitted {
    table: Arc<Table>,
    id: u64,
    evict: CancellationToken,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        inner.open -= 1;
        inner.anonymous.retain(|(id, _)| *id != self.id);
    }
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection, closing the oldest anonymous one if either cap is
    /// reached; `None` when every open connection is authenticated and the cap is reached.
    fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut inner = self.lock();
        let full = inner.open >= self.limits.max_connections;
        if full || inner.anonymous.len() >= self.limits.max_anonymous {
            match inner.anonymous.pop_front() {
                // Its task sees the token and ends at once; its `Admitted` then lowers
                // `open`, so the cap is exceeded by the evicted ones only while they close.
                Some((_, evict)) => evict.cancel(),
                None if full => return None,
                None => {}
            }
        }
        inner.open += 1;
        inner.next_id += 1;
        let id = inner.next_id;
        let evict = CancellationToken::new();
        inner.anonymous.push_back((id, evict.clone()));
        Some(Admitted { table: self.clone(), id, evict })
    }

    fn promote(&self, id: u64) {
        self.lock().anonymous.retain(|(other, _)| *other != id);
    }

    /// Closes the oldest anonymous connection, to free a descriptor.
    fn evict_oldest(&self) -> bool {
        let evicted = self.lock().anonymous.pop_front();
        evicted.map(|(_, token)| token.cancel()).is_some()
    }
}

/// Serves `router` on `listener` until `shutdown`, then lets open requests finish (at most
/// `limits.shutdown_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let table = Arc::new(Table { limits, inner: Mutex::default() });
    let tasks = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors: make room by closing the oldest anonymous connection
                // rather than refusing everyone until something else closes.
                let evicted = table.evict_oldest();
                warn!(error = %e, evicted, "accept failed");
                tokio::time::sleep(Duration::from_millis(if evicted { 1 } else { 50 })).await;
                continue;
            }
        };
        no_delay(&stream, peer);
        let Some(admitted) = table.admit() else {
            warn!(client = %peer, max = limits.max_connections, "connection limit reached; closing a new connection");
            continue;
        };
        let mark = ConnMark {
            id: admitted.id,
            table: table.clone(),
            authenticated: Arc::new(AtomicBool::new(false)),
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(mark.clone());
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tasks.spawn(serve_one(conn, admitted, peer, shutdown.clone()));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(limits.shutdown_timeout, tasks.wait()).await.is_err() {
        warn!("HTTP connections still open {:?} after shutdown began", limits.shutdown_timeout);
    }
    Ok(())
}

/// Connections the kernel holds for the bridge before it accepts them (capped by
/// `net.core.somaxconn`). The standard library's 128 made a burst past it (hundreds of
/// tabs reconnecting after a restart, 500 DELETEs at once in the benchmark) lose SYNs,
/// which their senders send again only a second later.
pub const LISTEN_BACKLOG: u32 = 1024;

/// Listens on `addr` with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As the standard library's bind does: a restarted bridge can take its port back
    // while connections of the one before linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Turns Nagle's algorithm off on an accepted socket. Keystrokes, their echoes and acks
/// are small writes: with it on, one sent while the previous is unacknowledged waits for
/// the peer's delayed ACK (up to 40 ms), and output under flow control crawled (8.6 MiB/s
/// against 62.5 with acks every 16 KiB, `cargo bench -p ptyd-tests --bench bridge`).
fn no_delay(stream: &tokio::net::TcpStream, peer: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(client = %peer, error = %e, "cannot set TCP_NODELAY");
    }
}

type Conn<S> = hyper::server::conn::http1::UpgradeableConnection<TokioIo<tokio::net::TcpStream>, S>;

/// Drives one connection until it ends, is evicted, or (after finishing the request in
/// flight) the server shuts down.
async fn serve_one<S>(conn: Conn<S>, admitted: Admitted, peer: SocketAddr, stop: CancellationToken)
where
    S: hyper::service::HttpService<Incoming, ResBody = axum::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(client = %peer, "HTTP connection ended: {e}");
                }
                break;
            }
            _ = admitted.evict.cancelled() => {
                debug!(client = %peer, "closed an anonymous connection to make room");
                break;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(admitted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_backlog_instead_of_losing_syns() {
        use futures::FutureExt;
        const BURST: usize = 300;
        // The kernel caps every backlog at net.core.somaxconn (128 before Linux 5.4).
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if somaxconn <= BURST {
            eprintln!("skipped: net.core.somaxconn is {somaxconn}, no backlog can hold {BURST}");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        // Connected before any is accepted, as when the accept loop is busy. With room for
        // fewer, the kernel drops the rest's SYNs and their connects wait for an accept
        // that never comes.
        let connects = (0..BURST).map(|_| tokio::net::TcpStream::connect(addr));
        let all = futures::future::join_all(connects);
        let clients = tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .expect("connects lost from the backlog never completed");
        assert!(clients.iter().all(Result::is_ok));
        // Every one is waiting to be accepted now; one whose handshake was dropped for
        // want of room would come back only after the client's one-second retry.
        let (mut accepted, mut idle_polls) = (0, 0);
        while accepted < BURST && idle_polls < 1000 {
            match listener.accept().now_or_never() {
                Some(r) => {
                    r.unwrap();
                    accepted += 1;
                }
                None => {
                    idle_polls += 1;
                    tokio::task::yield_now().await;
                }
            }
        }
        assert_eq!(accepted, BURST, "connections lost from the backlog");
    }

    #[tokio::test]
    async fn accepted_sockets_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap(), "the kernel's default changed");
        no_delay(&stream, peer);
        assert!(stream.nodelay().unwrap());
    }

    fn table(max_connections: usize, max_anonymous: usize) -> Arc<Table> {
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            max_connections,
            max_anonymous,
            shutdown_timeout: Duration::from_secs(1),
        };
        Arc::new(Table { limits, inner: Mutex::default() })
    }

    #[test]
    fn anonymous_connections_make_room_oldest_first() {
        let t = table(10, 2);
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let c = t.admit().unwrap();
        assert!(a.evict.is_cancelled(), "the oldest anonymous one goes");
        assert!(!b.evict.is_cancelled() && !c.evict.is_cancelled());
        drop(a);
        assert_eq!(t.lock().open, 2);
    }

    #[test]
    fn authenticated_connections_are_kept_and_the_cap_holds() {
        let t = table(2, 2);
        let a = t.admit().unwrap();
        t.promote(a.id);
        let b = t.admit().unwrap();
        let c = t.admit().unwrap();
        assert!(b.evict.is_cancelled(), "at the cap an anonymous one makes room");
        assert!(!a.evict.is_cancelled());
        t.promote(c.id);
        drop(b);
        assert!(t.admit().is_none(), "every open connection is authenticated");
        drop(c);
        assert!(t.admit().is_some());
    }
}
