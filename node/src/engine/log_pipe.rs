//! A component's stdout and stderr, captured line by line into the node's log under
//! the component's name (nothing reaches the node's own stdout).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept; the rest of a longer line is cut, so a component cannot make the
/// node buffer without bound.
const MAX_LINE: usize = 4096;

/// The last few lines a component wrote to a stream (a panic message, typically), so
/// a trap can be reported with the component's own words.
pub(crate) type LastLine = Arc<Mutex<std::collections::VecDeque<String>>>;

/// Lines kept in a [`LastLine`].
const LAST_LINES: usize = 4;

/// What a component last said, as one line: the kept lines minus Rust's
/// "note: run with RUST_BACKTRACE" hint.
pub(crate) fn take_last_words(last: &LastLine) -> Option<String> {
    let lines: Vec<String> = last.lock().ok()?.drain(..).collect();
    let said: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    (!said.is_empty()).then(|| said.join(" "))
}

#[derive(Clone)]
pub(crate) struct LogPipe {
    component: Arc<str>,
    stream: &'static str,
    line: Arc<Mutex<Vec<u8>>>,
    /// Where to keep the last lines, for streams whose words explain a trap.
    last: Option<LastLine>,
    /// The component's logging allowance (see `log_budget`).
    budget: Arc<super::log_budget::LogBudget>,
}

impl LogPipe {
    pub(crate) fn new(
        component: Arc<str>,
        stream: &'static str,
        last: Option<LastLine>,
        budget: Arc<super::log_budget::LogBudget>,
    ) -> Self {
        LogPipe {
            component,
            stream,
            line: Arc::new(Mutex::new(Vec::new())),
            last,
            budget,
        }
    }

    fn write_bytes(&self, buf: &[u8]) {
        let Ok(mut line) = self.line.lock() else {
            return;
        };
        for &b in buf {
            if b == b'\n' {
                self.emit(&line);
                line.clear();
            } else if line.len() < MAX_LINE {
                line.push(b);
            }
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        // Past the component's allowance a line is counted, not logged; its last words
        // are still kept for a trap's message.
        if self.budget.take() {
            tracing::info!(
                target: "component",
                component = %self.component,
                stream = self.stream,
                "{text}"
            );
        }
        let Some(last) = &self.last else {
            return;
        };
        if let Ok(mut last) = last.lock() {
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(text.into_owned());
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
