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
//!
//! On a plain link, a big payload (a 1 MiB answer) is not copied into the buffer: its `Bytes`
//! are queued as they are, after the bytes queued before them, and leave with them in one
//! vectored write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::noise::Sealer;
use crate::protocol::{Frame, HEADER_LEN};
use crate::sync::lock;

const LOG: &str = "plume::mesh";
/// A payload at least this long is queued by reference on a plain link, not copied.
const BIG_PAYLOAD: usize = 32 * 1024;
/// Most pieces one vectored write hands the socket.
const MAX_SLICES: usize = 64;

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
    /// On a plain link: bytes that leave before `buf`, in order (runs of frames cut off `buf`
    /// and big payloads as their senders made them).
    pieces: VecDeque<Bytes>,
    /// The bytes in `pieces`.
    pieces_len: usize,
    /// Frames not written yet (plaintext), after `pieces`.
    buf: BytesMut,
    /// On an encrypted link: sealed records not written yet.
    wire: BytesMut,
    sealer: Option<Sealer>,
    /// The writer task owns the socket's write side until the buffer is empty.
    flushing: bool,
    closed: bool,
    /// Live [`Cork`]s: inline writes wait for the last one to drop.
    corked: u32,
    /// A frame was refused as [`QueueError::Full`] since the queue last emptied: its sender
    /// may be waiting for room, so whatever empties the queue wakes the waiters.
    refused: bool,
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
        self.pieces_len + self.buf.len() + self.wire.len()
    }

    /// Whether a frame of `need` bytes may be queued under `limit`: when it fits, or when the
    /// queue is empty (one frame bigger than the limit is admitted alone, so the queue holds at
    /// most the larger of the limit and one frame, and a big frame never waits forever).
    fn has_room(&self, need: usize, limit: usize) -> bool {
        let queued = self.queued();
        queued == 0 || queued + need <= limit
    }

    /// Append a frame: its bytes into `buf`, or on a plain link a big payload as a piece of its
    /// own after what is queued (no copy).
    fn append(&mut self, frame: &Frame) {
        if self.sealer.is_some() || frame.payload.len() < BIG_PAYLOAD {
            frame.encode_into(&mut self.buf);
            return;
        }
        frame.encode_header_into(&mut self.buf);
        let before = self.buf.split().freeze();
        self.pieces_len += before.len() + frame.payload.len();
        self.pieces.push_back(before);
        self.pieces.push_back(frame.payload.clone());
    }

    /// Everything queued on a plain link with pieces, taken out in order (for the writer task).
    fn take_pieces(&mut self) -> VecDeque<Bytes> {
        let mut pieces = std::mem::take(&mut self.pieces);
        self.pieces_len = 0;
        if !self.buf.is_empty() {
            pieces.push_back(self.buf.split().freeze());
        }
        pieces
    }

    /// Drop what is queued.
    fn clear(&mut self) {
        self.pieces.clear();
        self.pieces_len = 0;
        self.buf.clear();
        self.wire.clear();
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
                pieces: VecDeque::new(),
                pieces_len: 0,
                buf: BytesMut::with_capacity(64 * 1024),
                wire: BytesMut::new(),
                sealer,
                flushing: false,
                closed: false,
                corked: 0,
                refused: false,
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
        if !st.has_room(HEADER_LEN + frame.payload.len(), self.limit) {
            st.refused = true;
            return Err(QueueError::Full);
        }
        st.append(frame);
        Ok(st)
    }

    /// Write the buffer with one non-blocking write; leave the rest to the writer task.
    fn write_inline(&self, mut st: MutexGuard<'_, State>) {
        let written = if st.pieces.is_empty() {
            self.write_buf_now(&mut st)
        } else {
            self.write_pieces_now(&mut st)
        };
        match written {
            Ok(true) => {
                // Emptied here, not by the writer task: wake a sender refused meanwhile (under
                // a cork, say), which would otherwise wait for a writer that never runs.
                if std::mem::take(&mut st.refused) {
                    drop(st);
                    self.space.notify_waiters();
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(target: LOG, error = %e, "write failed; closing the link");
                st.closed = true;
                st.clear();
                drop(st);
                self.closed.cancel();
                return;
            }
        }
        st.flushing = true;
        drop(st);
        self.wake_writer.notify_one();
    }

    /// One non-blocking write of the buffer (sealed first on an encrypted link); true when all
    /// of it left.
    fn write_buf_now(&self, st: &mut State) -> io::Result<bool> {
        st.outgoing().map_err(io::Error::other).and_then(|out| {
            let n = match self.wr.try_write(out) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            crate::metrics::bytes_sent(n);
            out.advance(n);
            Ok(out.is_empty())
        })
    }

    /// One non-blocking vectored write of the pieces and the buffer (a plain link); true when
    /// all of them left.
    fn write_pieces_now(&self, st: &mut State) -> io::Result<bool> {
        let n = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = gather(
                st.pieces.iter().map(|p| &p[..]).chain([&st.buf[..]]),
                &mut slices,
            );
            match self.wr.try_write_vectored(&slices[..count]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            }
        };
        crate::metrics::bytes_sent(n);
        let rest = consume(&mut st.pieces, n);
        st.pieces_len -= n - rest;
        st.buf.advance(rest);
        Ok(st.queued() == 0)
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

    /// Wait until a frame of `need` bytes (header and payload) fits in the buffer, or the link
    /// closed: the frame's own size, not just "under the limit", or a big frame's sender would
    /// retry at once while the queue is under its limit but too full for it.
    pub(crate) async fn wait_for_room(&self, need: usize) {
        loop {
            let space = self.space.notified();
            {
                let st = lock(&self.state);
                if st.closed || st.has_room(need, self.limit) {
                    return;
                }
            }
            tokio::select! {
                () = space => {}
                () = self.closed.cancelled() => return,
            }
        }
    }

    /// Write `pieces` in order, in vectored writes.
    async fn write_all_pieces(&self, mut pieces: VecDeque<Bytes>) -> io::Result<()> {
        while !pieces.is_empty() {
            self.wr.writable().await?;
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = gather(pieces.iter().map(|p| &p[..]), &mut slices);
                self.wr.try_write_vectored(&slices[..count])
            };
            match written {
                Ok(n) => {
                    crate::metrics::bytes_sent(n);
                    consume(&mut pieces, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
                    st.refused = false;
                    if st.pieces.is_empty() {
                        st.outgoing().map(|out| Chunk::Flat(out.split()))
                    } else {
                        Ok(Chunk::Pieces(st.take_pieces()))
                    }
                };
                self.space.notify_waiters();
                let written = match chunk {
                    Ok(Chunk::Flat(chunk)) => self.write_all(&chunk).await,
                    Ok(Chunk::Pieces(pieces)) => self.write_all_pieces(pieces).await,
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
        let (pieces, rest) = {
            let mut st = lock(&self.state);
            st.closed = true;
            if st.pieces.is_empty() {
                (
                    VecDeque::new(),
                    st.outgoing().map(BytesMut::split).unwrap_or_default(),
                )
            } else {
                (st.take_pieces(), BytesMut::new())
            }
        };
        self.space.notify_waiters();
        if !pieces.is_empty() || !rest.is_empty() {
            let flush = async {
                self.write_all_pieces(pieces).await?;
                self.write_all(&rest).await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
        }
        let stream: &tokio::net::TcpStream = self.wr.as_ref();
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    }
}

/// What the writer task takes out of the state to write without the lock.
enum Chunk {
    /// The buffer (or the sealed records).
    Flat(BytesMut),
    /// The pieces and the buffer after them.
    Pieces(VecDeque<Bytes>),
}

/// Fill `slices` with the first non-empty of `bufs`; how many it filled.
fn gather<'a>(bufs: impl Iterator<Item = &'a [u8]>, slices: &mut [IoSlice<'a>]) -> usize {
    let mut count = 0;
    for (slot, buf) in slices.iter_mut().zip(bufs.filter(|b| !b.is_empty())) {
        *slot = IoSlice::new(buf);
        count += 1;
    }
    count
}

/// Drop the first `n` bytes of `pieces`; what is left of `n` when they run out.
fn consume(pieces: &mut VecDeque<Bytes>, mut n: usize) -> usize {
    while let Some(front) = pieces.front_mut() {
        if n < front.len() {
            front.advance(n);
            return 0;
        }
        n -= front.len();
        pieces.pop_front();
    }
    n
}

/// Holds an [`Outbox`]'s inline writes back while it lives (see [`Outbox::cork`]).
pub(crate) struct Cork<'a>(&'a Outbox);

impl Drop for Cork<'_> {
    fn drop(&mut self) {
        self.0.uncork();
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
