//! The bounded write side of a link.
//!
//! A sender appends its frame to the link's buffer. When no write is in progress, the sender
//! writes the buffer to the socket itself with one non-blocking `write`; only what the socket
//! does not take at once is left to the link's writer task. Under load, frames queue behind the
//! write in progress and go out in batches.
//!
//! Two ways to batch on purpose, since every `write` on loopback also runs the receiver's
//! network stack and wakes its reader:
//! - [`Outbox::try_send_batched`] leaves the frame to the writer task, which first lets the
//!   other ready tasks of its worker run (and queue their frames) and then writes them all;
//! - [`Outbox::cork`] holds inline writes back until the guard drops (the link's reader corks
//!   while it handles the frames of one read, so the replies to a batch of requests leave in
//!   one write).
//!
//! On an encrypted link ([`Sealer`]) what is queued is sealed into records just before it is
//! written: one AEAD per write (per 64 KiB), not per frame.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::noise::Sealer;
use crate::protocol::{Frame, HEADER_LEN};
use crate::sync::lock;

const LOG: &str = "plume::mesh";

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The buffer is at its limit.
    Full,
    /// The link is closed.
    Closed,
}

#[derive(Debug)]
struct State {
    /// Frames not written yet (plaintext).
    buf: BytesMut,
    /// On an encrypted link: sealed records not written yet.
    wire: BytesMut,
    sealer: Option<Sealer>,
    /// The writer task owns the socket's write side until the buffer is empty.
    flushing: bool,
    closed: bool,
    /// Live [`Cork`]s: inline writes wait for the last one to drop.
    corked: u32,
}

/// A link's write buffer and socket write half.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    wr: OwnedWriteHalf,
    limit: usize,
    wake_writer: Notify,
    space: Notify,
    closed: CancellationToken,
}

impl State {
    /// Bytes waiting, sealed or not.
    fn queued(&self) -> usize {
        self.buf.len() + self.wire.len()
    }

    /// What goes on the socket next: the frames themselves, or on an encrypted link the records
    /// they are sealed into now.
    fn outgoing(&mut self) -> Result<&mut BytesMut, super::CryptoError> {
        match &mut self.sealer {
            None => Ok(&mut self.buf),
            Some(sealer) => {
                sealer.seal(&mut self.buf, &mut self.wire)?;
                Ok(&mut self.wire)
            }
        }
    }
}

impl Outbox {
    pub(crate) fn new(
        wr: OwnedWriteHalf,
        limit: usize,
        closed: CancellationToken,
        sealer: Option<Sealer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(64 * 1024),
                wire: BytesMut::new(),
                sealer,
                flushing: false,
                closed: false,
                corked: 0,
            }),
            wr,
            limit,
            wake_writer: Notify::new(),
            space: Notify::new(),
            closed,
        })
    }

    /// Queue a frame without waiting. A frame always fits in an empty buffer.
    pub(crate) fn try_send(&self, frame: &Frame) -> Result<(), QueueError> {
        let st = self.queue(frame)?;
        if st.flushing || st.corked > 0 {
            return Ok(());
        }
        self.write_inline(st);
        Ok(())
    }

    /// Append a frame to the buffer (a frame always fits in an empty one); the state stays
    /// locked for the caller to decide how it leaves.
    fn queue(&self, frame: &Frame) -> Result<MutexGuard<'_, State>, QueueError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(QueueError::Closed);
        }
        let need = HEADER_LEN + frame.payload.len();
        if st.queued() > 0 && st.queued() + need > self.limit {
            return Err(QueueError::Full);
        }
        frame.encode_into(&mut st.buf);
        Ok(st)
    }

    /// Write the buffer with one non-blocking write; leave the rest to the writer task.
    fn write_inline(&self, mut st: MutexGuard<'_, State>) {
        let written = st.outgoing().map_err(io::Error::other).and_then(|out| {
            let n = match self.wr.try_write(out) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            crate::metrics::bytes_sent(n);
            out.advance(n);
            Ok(out.is_empty())
        });
        match written {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(target: LOG, error = %e, "write failed; closing the link");
                st.closed = true;
                st.buf.clear();
                st.wire.clear();
                drop(st);
                self.closed.cancel();
                return;
            }
        }
        st.flushing = true;
        drop(st);
        self.wake_writer.notify_one();
    }

    /// Hold inline writes back until the returned guard drops; then what was queued goes out
    /// in one write.
    pub(crate) fn cork(&self) -> Cork<'_> {
        lock(&self.state).corked += 1;
        Cork(self)
    }

    fn uncork(&self) {
        let mut st = lock(&self.state);
        st.corked = st.corked.saturating_sub(1);
        if st.corked > 0 || st.flushing || st.closed || st.queued() == 0 {
            return;
        }
        self.write_inline(st);
    }

    /// Queue a frame for the writer task without writing it here: for events, which then go
    /// out in batches.
    pub(crate) fn try_send_batched(&self, frame: &Frame) -> Result<(), QueueError> {
        let mut st = self.queue(frame)?;
        if !st.flushing {
            st.flushing = true;
            drop(st);
            self.wake_writer.notify_one();
        }
        Ok(())
    }

    /// Queue a frame, waiting for room while the buffer is full.
    pub(crate) async fn send(&self, frame: &Frame) -> Result<(), QueueError> {
        loop {
            let space = self.space.notified();
            match self.try_send(frame) {
                Err(QueueError::Full) => {}
                other => return other,
            }
            tokio::select! {
                () = space => {}
                () = self.closed.cancelled() => return Err(QueueError::Closed),
            }
        }
    }

    /// Wait until the buffer may have room (or the link closed).
    pub(crate) async fn wait_for_space(&self) {
        let space = self.space.notified();
        if !self.is_full() {
            return;
        }
        tokio::select! {
            () = space => {}
            () = self.closed.cancelled() => {}
        }
    }

    fn is_full(&self) -> bool {
        let st = lock(&self.state);
        st.queued() > 0 && st.queued() >= self.limit
    }

    async fn write_all(&self, mut chunk: &[u8]) -> io::Result<()> {
        while !chunk.is_empty() {
            self.wr.writable().await?;
            match self.wr.try_write(chunk) {
                Ok(n) => {
                    crate::metrics::bytes_sent(n);
                    chunk = &chunk[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The link's writer task: finishes writes the socket did not take at once; on close,
    /// flushes what is queued (bounded) and shuts the write side down.
    pub(crate) async fn run_writer(self: Arc<Self>) {
        loop {
            tokio::select! {
                biased;
                () = self.wake_writer.notified() => {}
                () = self.closed.cancelled() => break,
            }
            // Let the other ready tasks of this worker queue their frames first: they leave
            // in the same write.
            tokio::task::yield_now().await;
            loop {
                let chunk = {
                    let mut st = lock(&self.state);
                    if st.queued() == 0 {
                        st.flushing = false;
                        break;
                    }
                    st.outgoing().map(BytesMut::split)
                };
                self.space.notify_waiters();
                let written = match chunk {
                    Ok(chunk) => self.write_all(&chunk).await,
                    Err(e) => Err(io::Error::other(e)),
                };
                if let Err(e) = written {
                    tracing::debug!(target: LOG, error = %e, "write failed; closing the link");
                    self.closed.cancel();
                    lock(&self.state).closed = true;
                    return;
                }
            }
        }
        let rest = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.outgoing().map(BytesMut::split).unwrap_or_default()
        };
        self.space.notify_waiters();
        if !rest.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.write_all(&rest)).await;
        }
        let stream: &tokio::net::TcpStream = self.wr.as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
}

/// Holds an [`Outbox`]'s inline writes back while it lives (see [`Outbox::cork`]).
pub(crate) struct Cork<'a>(&'a Outbox);

impl Drop for Cork<'_> {
    fn drop(&mut self) {
        self.0.uncork();
    }
}
