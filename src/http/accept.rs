//! Our own HTTP/1.1 accept loop (docs/operations.md, "Connections"): a connection cap
//! that evicts the least recently active connection with no request in
//! flight (an answered request whose unread body is being dropped has none),
//! a header-read timeout (for every request head, not only the first), an idle keep-alive timeout, and a graceful
//! shutdown that closes idle connections at once and drains the rest.
//!
//! `axum::serve` has none of these: silent connections pile up until the
//! descriptor limit stops `accept`, and shutdown waits for them.
use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tower::ServiceExt as _;

/// Read buffer ceiling per connection: it bounds a request head (and the
/// memory a slow-header client can pin) to 16 KiB.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// At most one "connection cap reached" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    /// A request head must arrive within this long of the first byte (or of
    /// the accept, for a connection that has sent nothing yet).
    pub header_timeout: Duration,
    /// A keep-alive connection with no request is closed after this long.
    pub idle_timeout: Duration,
}

/// Per-connection bookkeeping shared by the connection task, its request
/// guards and the accept loop. Times are milliseconds since server start.
struct Conn {
    in_flight: AtomicUsize,
    /// End of the last response (or the accept).
    last_active: AtomicU64,
    /// First byte read while no request was in flight; 0 = none yet.
    head_started: AtomicU64,
    /// True until the first request: its silence is bounded by the header timeout.
    fresh: AtomicBool,
    evicting: AtomicBool,
    close: Notify,
}

struct Registry {
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    empty: Notify,
    evicted: AtomicU64,
    refused: AtomicU64,
    last_warn: Mutex<Option<Instant>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Makes room for one more connection: true when there is room.
    fn admit(&self, limits: &ConnLimits) -> bool {
        let conns = self.conns.lock().unwrap();
        let live = conns
            .values()
            .filter(|c| !c.evicting.load(Ordering::Relaxed))
            .count();
        if live < limits.max_connections {
            return true;
        }
        let victim = conns
            .values()
            .filter(|c| {
                !c.evicting.load(Ordering::Relaxed) && c.in_flight.load(Ordering::Acquire) == 0
            })
            .min_by_key(|c| c.last_active.load(Ordering::Relaxed));
        let admitted = match victim {
            Some(v) => {
                v.evicting.store(true, Ordering::Relaxed);
                v.close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        drop(conns);
        self.warn_at_cap(limits.max_connections);
        admitted
    }

    fn warn_at_cap(&self, max: usize) {
        let mut last = self.last_warn.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < WARN_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        let evicted = self.evicted.swap(0, Ordering::Relaxed);
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            max_connections = max,
            evicted,
            refused,
            "connection cap reached: closing idle connections to admit new ones (FACECOMPARE_MAX_CONNECTIONS)"
        );
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap();
        conns.remove(&id);
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    fn close_all(&self) {
        for c in self.conns.lock().unwrap().values() {
            c.evicting.store(true, Ordering::Relaxed);
            c.close.notify_one();
        }
    }
}

/// Counts a request as in flight from dispatch until its response is ready.
struct InFlight {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InFlight {
    fn start(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.fresh.store(false, Ordering::Relaxed);
        conn.head_started.store(0, Ordering::Relaxed);
        Self { conn, registry }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.head_started.store(0, Ordering::Relaxed);
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Wake the watchdog: the idle clock starts now.
            self.conn.close.notify_one();
        }
    }
}

/// The socket, noting when a new request head starts arriving.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && self.conn.in_flight.load(Ordering::Acquire) == 0
            && self.conn.head_started.load(Ordering::Relaxed) == 0
        {
            let now = self.registry.now_ms();
            self.conn.head_started.store(now, Ordering::Relaxed);
            // The watchdog sleeps until the idle deadline: the header
            // timeout now applies (a half-sent second head is not held 75 s).
            self.conn.close.notify_one();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// When the connection's current wait runs out, if no request is in flight.
fn deadline(conn: &Conn, limits: &ConnLimits) -> Option<u64> {
    if conn.in_flight.load(Ordering::Acquire) > 0 {
        return None;
    }
    let head = conn.head_started.load(Ordering::Relaxed);
    let ms = |d: Duration| d.as_millis() as u64;
    Some(if head != 0 {
        head + ms(limits.header_timeout)
    } else if conn.fresh.load(Ordering::Relaxed) {
        conn.last_active.load(Ordering::Relaxed) + ms(limits.header_timeout)
    } else {
        conn.last_active.load(Ordering::Relaxed) + ms(limits.idle_timeout)
    })
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes idle
/// connections and waits for in-flight requests, at most `drain_timeout`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
    drain_timeout: Duration,
) {
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        conns: Mutex::new(HashMap::new()),
        empty: Notify::new(),
        evicted: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        last_warn: Mutex::new(None),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Our watchdog enforces the header timeout from the first byte; this
        // is the backstop for a head that arrives slower than that.
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout) + limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let builder = Arc::new(builder);
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: make room and retry shortly
                    // instead of spinning. Descriptor exhaustion is reported
                    // by the (rate-limited) cap warning, not once per accept.
                    if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        tracing::warn!(error = %e, "accept failed");
                    }
                    registry.admit(&ConnLimits { max_connections: 0, ..limits });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if !registry.admit(&limits) {
            // Every connection has a request in flight: refuse rather than queue.
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(registry.now_ms()),
            head_started: AtomicU64::new(0),
            fresh: AtomicBool::new(true),
            evicting: AtomicBool::new(false),
            close: Notify::new(),
        });
        registry.conns.lock().unwrap().insert(id, conn.clone());
        tokio::spawn(serve_conn(
            id,
            stream,
            conn,
            registry.clone(),
            builder.clone(),
            app.clone(),
            limits,
        ));
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    registry.close_all();
    let drained = async {
        loop {
            let empty = registry.empty.notified();
            if registry.conns.lock().unwrap().is_empty() {
                return;
            }
            empty.await;
        }
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!("drain timeout: closing remaining connections");
    }
}

async fn serve_conn(
    id: u64,
    stream: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    builder: Arc<hyper::server::conn::http1::Builder>,
    app: Router,
    limits: ConnLimits,
) {
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
        registry: registry.clone(),
    });
    let service = {
        let conn = conn.clone();
        let registry = registry.clone();
        hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let guard = InFlight::start(conn.clone(), registry.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await;
                drop(guard);
                Ok::<_, Infallible>(response.unwrap_or_else(|e| match e {}))
            }
        })
    };
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        let wait = match deadline(&conn, &limits) {
            Some(at) => Duration::from_millis(at.saturating_sub(registry.now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = served.as_mut() => break,
            () = conn.close.notified() => {
                if conn.evicting.load(Ordering::Relaxed) && !closing {
                    if conn.in_flight.load(Ordering::Acquire) == 0
                        && conn.head_started.load(Ordering::Relaxed) != 0
                    {
                        // Half a request head, or the unread body of an
                        // answered request: hyper would wait for the rest.
                        break;
                    }
                    // Idle connections close at once; a request in flight finishes first.
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(wait) => {
                if let Some(at) = deadline(&conn, &limits)
                    && at <= registry.now_ms()
                {
                    // Idle keep-alive or slow header: nothing is lost by closing.
                    break;
                }
            }
        }
    }
    registry.remove(id);
}

/// Raises the soft descriptor limit to the hard one and returns it: every
/// connection costs a descriptor, and the usual soft default (1024) is far
/// below what the machine allows.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        // rlim_t is not u64 on every platform.
        #[allow(clippy::unnecessary_cast)]
        let limit = lim.rlim_cur as u64;
        limit
    }
}

/// Default connection cap: the descriptor limit less a reserve for the
/// database pool, S3 connections, model and log files, and at most 10,000
/// (each connection may hold a 16 KiB read buffer).
pub fn default_max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 4).clamp(32, 256);
    fd_limit.saturating_sub(reserve).clamp(16, 10_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_a_reserve() {
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(4096), 3840);
        assert_eq!(default_max_connections(1 << 20), 10_000);
        assert_eq!(default_max_connections(20), 16);
    }
}
