//! The write side of every axon connection: frames queued by any task, written in order, those
//! queued together in one vectored write.

use std::io::IoSlice;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Most frames gathered into one write.
pub(super) const BATCH_FRAMES: usize = 64;

/// Write the frames queued on `rx` to `write` until the queue closes (then shut the write side
/// down) or a write fails.
pub(super) fn spawn_writer<W>(write: W, rx: mpsc::Receiver<Bytes>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(write_frames(write, rx));
}

/// The writer's loop. Frames queued at once go out in one vectored write of at most
/// [`BATCH_FRAMES`] frames. Woken by a first frame, it yields once before gathering: the tasks
/// ready at that moment (the other replies to requests that came in one read, events published
/// together) queue theirs first. The peer then gets them in one segment and one read, where a
/// Node peer would pay a socket read, a `'data'` event and a stream write per frame.
async fn write_frames<W: AsyncWrite + Unpin>(mut write: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH_FRAMES);
    while let Some(frame) = rx.recv().await {
        batch.push(frame);
        tokio::task::yield_now().await;
        while batch.len() < BATCH_FRAMES {
            match rx.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        if write_all_vectored(&mut write, &batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = write.shutdown().await;
}

/// Write every byte of `frames`, in as few vectored writes as the socket takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    write: &mut W,
    frames: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = frames
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| IoSlice::new(f))
        .collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = write.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::amp::{self, Arg, FrameDecoder};

    /// A real socket's write half that counts the writes made on it.
    struct Counted<W> {
        inner: W,
        writes: Arc<AtomicUsize>,
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for Counted<W> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn reply(n: usize) -> Bytes {
        amp::encode_args(&[
            Arg::Json(serde_json::Value::Null),
            Arg::Json(serde_json::json!([{ "id": n, "text": "x".repeat(n % 7) }])),
            Arg::Str(format!("42:{n}")),
        ])
        .expect("a frame")
    }

    /// A loopback connection: the client's write half (counting its writes), the count, the
    /// server side, and the client's read half (kept open).
    async fn link() -> (
        Counted<tokio::net::tcp::OwnedWriteHalf>,
        Arc<AtomicUsize>,
        TcpStream,
        tokio::net::tcp::OwnedReadHalf,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read, write) = client.into_split();
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner: write,
            writes: writes.clone(),
        };
        (counted, writes, server, read)
    }

    /// The message ids of the frames `server` receives until the stream ends, in order.
    async fn received_ids(mut server: TcpStream) -> Vec<String> {
        let mut bytes = Vec::new();
        server.read_to_end(&mut bytes).await.expect("read");
        let mut dec = FrameDecoder::new(amp::DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        let mut ids = Vec::new();
        while let Some(frame) = dec.next_frame().expect("a frame") {
            let mut args = amp::decode_args(frame).expect("args");
            match args.pop() {
                Some(Arg::Str(id)) => ids.push(id),
                other => panic!("a message id, not {other:?}"),
            }
        }
        ids
    }

    /// Queue `n` replies, write them over a loopback connection: the writes made, and the
    /// message ids the peer decoded, in order.
    async fn send_queued(n: usize) -> (usize, Vec<String>) {
        let (counted, writes, server, _read) = link().await;
        let (tx, rx) = mpsc::channel(n);
        for i in 0..n {
            tx.try_send(reply(i)).expect("room in the queue");
        }
        drop(tx);
        write_frames(counted, rx).await;
        (writes.load(Ordering::Relaxed), received_ids(server).await)
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("42:{i}")).collect()
    }

    #[tokio::test]
    async fn frames_queued_together_go_out_in_one_write() {
        assert_eq!(send_queued(10).await, (1, ids(10)));
        // Over the batch limit: one write per BATCH_FRAMES frames, the order kept.
        let n = BATCH_FRAMES * 2 + 3;
        assert_eq!(send_queued(n).await, (3, ids(n)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_finished_by_tasks_of_one_moment_share_a_write() {
        // As the responder does: one task per request, each queueing its reply; here all of
        // them released at one moment.
        let (counted, writes, server, _read) = link().await;
        let (tx, rx) = mpsc::channel(64);
        let n = 32;
        let gate = Arc::new(tokio::sync::Barrier::new(n));
        let mut tasks = Vec::new();
        for i in 0..n {
            let (tx, gate) = (tx.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                let _ = tx.send(reply(i)).await;
            }));
        }
        drop(tx);
        let writer = tokio::spawn(write_frames(counted, rx));
        for t in tasks {
            t.await.expect("a task");
        }
        writer.await.expect("the writer");
        let mut got = received_ids(server).await;
        got.sort_by_key(|id| id[3..].parse::<usize>().unwrap_or(usize::MAX));
        assert_eq!(got, ids(n));
        // 32 replies released together on two threads: far fewer writes than replies.
        let w = writes.load(Ordering::Relaxed);
        assert!(w <= n / 4, "{w} writes for {n} replies released together");
    }

    /// A sink that takes at most 7 bytes per write.
    #[derive(Default)]
    struct Stingy(Vec<u8>);

    impl AsyncWrite for Stingy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut taken = 0;
            for b in bufs {
                let n = b.len().min(7 - taken);
                self.0.extend_from_slice(&b[..n]);
                taken += n;
                if taken == 7 {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn short_writes_resume_mid_frame() {
        let frames: Vec<Bytes> = (0..5).map(reply).chain([Bytes::new()]).collect();
        let mut sink = Stingy::default();
        write_all_vectored(&mut sink, &frames)
            .await
            .expect("written");
        assert_eq!(sink.0, frames.concat());
    }
}
