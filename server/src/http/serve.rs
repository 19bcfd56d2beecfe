//! The connection loop: HTTP/1.1 connections with a header timeout, a connection limit that
//! evicts the longest-waiting idle connection instead of refusing new ones, an idle sweep, and a
//! graceful shutdown that lets requests in flight finish.
//!
//! axum's own `serve` sets no timer and no limit: 1,100 half-sent requests under the common fd
//! limit of 1,024 once stopped `/v1/health` answering. Here a connection is *idle* while it has
//! no request in progress — a half-sent request's headers included — and idle connections are
//! the ones that make room: the oldest goes when the limit is reached, and any goes after
//! [`Limits::idle`]. A request in progress (a long-polling claim, say) is never cut by either.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

/// How the server treats connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            header: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

/// Raises this process's open-file soft limit to its hard limit ([`serve`] does, at start).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
    }
}

/// The default connection limit: what the open-file limit allows once [`serve`] has raised it
/// to the hard limit, keeping 256 descriptors for the database, logs and everything else, and
/// at most 16,384.
pub fn default_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let fds = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    usize::try_from(fds.saturating_sub(256))
        .unwrap_or(usize::MAX)
        .clamp(64, 16_384)
}

struct Slot {
    /// Requests in progress on this connection.
    busy: usize,
    /// When it last had none.
    idle_since: Instant,
    close: Option<oneshot::Sender<()>>,
}

/// The open connections and whether each is idle.
#[derive(Default)]
struct Registry {
    slots: Mutex<HashMap<u64, Slot>>,
    next: AtomicU64,
}

impl Registry {
    fn open(&self) -> (u64, oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = oneshot::channel();
        self.slots.lock().unwrap().insert(
            id,
            Slot {
                busy: 0,
                idle_since: Instant::now(),
                close: Some(close),
            },
        );
        (id, closed)
    }

    fn len(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    fn closed(&self, id: u64) {
        self.slots.lock().unwrap().remove(&id);
    }

    fn begin(&self, id: u64) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(&id) {
            s.busy += 1;
        }
    }

    fn end(&self, id: u64) {
        if let Some(s) = self.slots.lock().unwrap().get_mut(&id) {
            s.busy = s.busy.saturating_sub(1);
            if s.busy == 0 {
                s.idle_since = Instant::now();
            }
        }
    }

    /// Closes the connection idle the longest; false if every connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let oldest = slots
            .iter()
            .filter(|(_, s)| s.busy == 0 && s.close.is_some())
            .min_by_key(|(_, s)| s.idle_since)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| slots.get_mut(&id)) {
            Some(slot) => {
                if let Some(close) = slot.close.take() {
                    let _ = close.send(());
                }
                true
            }
            None => false,
        }
    }

    /// Closes every connection idle since before `cutoff`; returns how many.
    fn close_idle_since(&self, cutoff: Instant) -> usize {
        let mut closed = 0;
        for slot in self.slots.lock().unwrap().values_mut() {
            if slot.busy == 0
                && slot.idle_since < cutoff
                && let Some(close) = slot.close.take()
            {
                let _ = close.send(());
                closed += 1;
            }
        }
        closed
    }
}

/// Forgets a connection when its task ends, however it ends (a panic included), so that a
/// lost task never holds a slot of the limit.
struct Open {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.registry.closed(self.id);
    }
}

/// Marks a request finished when dropped (answered, failed or abandoned by its client).
struct Busy {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.registry.end(self.id);
    }
}

/// Serves `app` on `listener` until `shutdown` turns true; then stops accepting, lets requests
/// in flight finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    raise_fd_limit();
    let registry = Arc::new(Registry::default());
    let sweeper = tokio::spawn(sweep_idle(registry.clone(), limits.idle));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept:
                // make room and go on.
                tracing::warn!("accepting a connection failed: {e}");
                registry.evict_oldest_idle();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if registry.len() >= limits.max_connections && !registry.evict_oldest_idle() {
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached with every connection busy; closing a new one"
            );
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (id, closed) = registry.open();
        let registry = registry.clone();
        let app = app.clone();
        let header = limits.header;
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let _open = Open {
                registry: registry.clone(),
                id,
            };
            let service = {
                let registry = registry.clone();
                hyper::service::service_fn(move |request: Request<Incoming>| {
                    registry.begin(id);
                    let busy = Busy {
                        registry: registry.clone(),
                        id,
                    };
                    let app = app.clone();
                    async move {
                        let response = app.oneshot(request.map(axum::body::Body::new)).await;
                        drop(busy);
                        response.map_err(|e: Infallible| match e {})
                    }
                })
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::pin!(closed);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection ended: {e}");
                        }
                        break;
                    }
                    _ = &mut closed, if !draining => break,
                    _ = stop.wait_for(|s| *s), if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
        // Reap finished connection tasks as we go.
        while connections.try_join_next().is_some() {}
    }
    sweeper.abort();
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Closes connections idle for longer than `idle`, checking a few times per period.
async fn sweep_idle(registry: Arc<Registry>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        if let Some(cutoff) = Instant::now().checked_sub(idle) {
            let n = registry.close_idle_since(cutoff);
            if n > 0 {
                tracing::debug!(connections = n, "closed idle connections");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_picks_the_longest_idle_and_spares_busy_ones() {
        let r = Registry::default();
        let (a, mut a_closed) = r.open();
        std::thread::sleep(Duration::from_millis(2));
        let (b, mut b_closed) = r.open();
        r.begin(a);
        assert!(r.evict_oldest_idle(), "b is idle");
        assert!(b_closed.try_recv().is_ok());
        assert!(a_closed.try_recv().is_err(), "a is busy");
        r.closed(b);
        assert!(!r.evict_oldest_idle(), "only a busy connection is left");
        r.end(a);
        assert!(r.evict_oldest_idle());
        assert!(a_closed.try_recv().is_ok());
        assert_eq!(r.len(), 1, "closed only once its task ends");
    }

    #[test]
    fn the_sweep_closes_only_connections_idle_long_enough() {
        let r = Registry::default();
        let (_old, mut old_closed) = r.open();
        let cutoff = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        let (_new, mut new_closed) = r.open();
        assert_eq!(r.close_idle_since(cutoff), 1);
        assert!(old_closed.try_recv().is_ok());
        assert!(new_closed.try_recv().is_err());
    }
}
