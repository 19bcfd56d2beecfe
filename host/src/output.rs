//! A guest's stdout and stderr, turned into log lines of its task as they are written.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tessera_api::Level;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::log::AttemptLog;

/// A partial line longer than this is written out without waiting for its newline.
const MAX_PENDING: usize = 16 * 1024;
/// How much of the end of stderr is kept to explain a crash.
const TAIL_BYTES: usize = 4 * 1024;

/// Which of the guest's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Stdout,
    Stderr,
}

struct StreamState {
    kind: StreamKind,
    log: Arc<Mutex<AttemptLog>>,
    pending: Mutex<Vec<u8>>,
    tail: Mutex<String>,
}

/// One guest output stream; clones share the same line buffer.
#[derive(Clone)]
pub(crate) struct GuestStream(Arc<StreamState>);

impl GuestStream {
    pub(crate) fn new(kind: StreamKind, log: Arc<Mutex<AttemptLog>>) -> Self {
        GuestStream(Arc::new(StreamState {
            kind,
            log,
            pending: Mutex::new(Vec::new()),
            tail: Mutex::new(String::new()),
        }))
    }

    fn accept(&self, bytes: &[u8]) {
        let mut pending = self.0.pending.lock().unwrap();
        pending.extend_from_slice(bytes);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_PENDING {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    /// Writes out a last line that had no newline.
    pub(crate) fn finish(&self) {
        let line = std::mem::take(&mut *self.0.pending.lock().unwrap());
        if !line.is_empty() {
            self.emit(&line);
        }
    }

    /// The last few KiB written to this stream (kept for stderr only).
    pub(crate) fn tail(&self) -> String {
        self.0.tail.lock().unwrap().clone()
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let (level, name) = match self.0.kind {
            StreamKind::Stdout => (Level::Info, "stdout"),
            StreamKind::Stderr => {
                let mut tail = self.0.tail.lock().unwrap();
                tail.push_str(line);
                tail.push('\n');
                if tail.len() > TAIL_BYTES {
                    let mut cut = tail.len() - TAIL_BYTES;
                    while !tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    tail.drain(..cut);
                }
                (Level::Warn, "stderr")
            }
        };
        self.0.log.lock().unwrap().write(
            level,
            line.to_string(),
            vec![("stream".into(), name.into())],
        );
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestStream {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
