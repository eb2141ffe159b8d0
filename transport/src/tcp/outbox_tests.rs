//! The outbox on a real loopback socket with small kernel buffers (so writes are partial and
//! the writer task finishes them): frames of every size, big payloads queued by reference among
//! small ones copied into the buffer, sent every way, arrive whole and in order; a sender
//! waiting for room waits until its whole frame fits, and is woken however the queue empties.

use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::{BIG_PAYLOAD, Outbox, QueueError};
use crate::protocol::{DEFAULT_MAX_FRAME, Frame, HEADER_LEN, Kind};

const WAIT: Duration = Duration::from_secs(60);

/// How a frame is handed to the outbox.
#[derive(Debug, Clone, Copy)]
enum Way {
    Send,
    TrySend,
    Batched,
    Corked,
}

fn frame(id: u64, len: usize) -> Frame {
    let payload: Vec<u8> = (0..len)
        .map(|k| (k as u64).wrapping_mul(31).wrapping_add(id) as u8)
        .collect();
    Frame {
        kind: Kind::Response,
        id,
        payload: Bytes::from(payload),
    }
}

async fn give(out: &Outbox, frame: &Frame, mut way: Way) {
    loop {
        let sent = match way {
            Way::Send => out.send(frame).await,
            Way::TrySend => out.try_send(frame),
            Way::Batched => out.try_send_batched(frame),
            Way::Corked => {
                let _cork = out.cork();
                out.try_send(frame)
            }
        };
        match sent {
            Ok(()) => return,
            Err(QueueError::Full) => way = Way::Send,
            Err(QueueError::Closed) => panic!("the outbox closed"),
        }
    }
}

/// A loopback connection with small kernel buffers (a big frame never fits in one write): the
/// client's write half, and the server end, which nobody reads until the test does.
async fn small_buffered_pair() -> (tokio::net::tcp::OwnedWriteHalf, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    socket2::SockRef::from(&client)
        .set_send_buffer_size(16 * 1024)
        .expect("sndbuf");
    socket2::SockRef::from(&server)
        .set_recv_buffer_size(16 * 1024)
        .expect("rcvbuf");
    let (_rd, wr) = client.into_split();
    (wr, server)
}

/// Read `expected` frames from `server` (in a task of its own).
fn read_frames(mut server: TcpStream, expected: usize) -> tokio::task::JoinHandle<Vec<Frame>> {
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < expected {
            match Frame::decode(&mut buf, DEFAULT_MAX_FRAME).expect("valid frames") {
                Some(f) => got.push(f),
                None => {
                    buf.reserve(64 * 1024);
                    let n = server.read_buf(&mut buf).await.expect("read");
                    assert!(n > 0, "closed after {} frames", got.len());
                }
            }
        }
        assert!(buf.is_empty(), "bytes after the last frame");
        got
    })
}

/// Send `frames` through an outbox over loopback and return what the other end decoded.
async fn through_a_socket(frames: &[(Frame, Way)]) -> Vec<Frame> {
    let (wr, server) = small_buffered_pair().await;
    let closed = tokio_util::sync::CancellationToken::new();
    let out = Outbox::new(wr, 4 * 1024 * 1024, closed.clone(), None);
    let writer = tokio::spawn(out.clone().run_writer());
    let reader = read_frames(server, frames.len());
    for (f, way) in frames {
        give(&out, f, *way).await;
    }
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("every frame arrives")
        .expect("reader");
    closed.cancel();
    tokio::time::timeout(WAIT, writer)
        .await
        .expect("the writer stops")
        .expect("writer");
    got
}

fn run<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn big_and_small_frames_arrive_whole_and_in_order() {
    let sizes = [
        0,
        5,
        BIG_PAYLOAD - 1,
        BIG_PAYLOAD,
        70_000,
        1_100_000,
        3,
        1_500_000,
        200,
        BIG_PAYLOAD + 1,
        2_000_000,
        0,
    ];
    let ways = [Way::Send, Way::TrySend, Way::Batched, Way::Corked];
    let frames: Vec<(Frame, Way)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| (frame(i as u64, len), ways[i % ways.len()]))
        .collect();
    let got = run(through_a_socket(&frames));
    let sent: Vec<Frame> = frames.into_iter().map(|(f, _)| f).collect();
    assert_eq!(got, sent);
}

/// The queue is under its limit but a big frame does not fit: waiting for room stays pending
/// until the whole frame fits (it used to return at once, as the queue was not "full", and
/// `Link::request` retried in a busy loop), and ends when the writer has taken the queue.
#[test]
fn a_big_frame_waits_until_all_of_it_fits() {
    run(async {
        let (wr, server) = small_buffered_pair().await;
        let closed = tokio_util::sync::CancellationToken::new();
        let out = Outbox::new(wr, 1536 * 1024, closed.clone(), None);
        // No writer task yet: what the socket does not take at once stays queued.
        let first = frame(1, 1024 * 1024);
        out.try_send(&first)
            .expect("an empty outbox takes any frame");
        let second = frame(2, 1024 * 1024);
        assert_eq!(out.try_send(&second), Err(QueueError::Full));
        let wait = out.wait_for_room(HEADER_LEN + second.payload.len());
        tokio::pin!(wait);
        for _ in 0..3 {
            assert!(
                futures::poll!(&mut wait).is_pending(),
                "room for the whole frame is not there yet"
            );
            tokio::task::yield_now().await;
        }
        // The writer drains the queue as the peer reads: the frame fits.
        let writer = tokio::spawn(out.clone().run_writer());
        let reader = read_frames(server, 2);
        tokio::time::timeout(WAIT, &mut wait)
            .await
            .expect("room once the writer took the queue");
        out.try_send(&second).expect("the frame fits now");
        let got = tokio::time::timeout(WAIT, reader)
            .await
            .expect("both frames arrive")
            .expect("reader");
        assert_eq!(got, vec![first, second]);
        closed.cancel();
        tokio::time::timeout(WAIT, writer)
            .await
            .expect("the writer stops")
            .expect("writer");
    });
}

/// A sender refused while the queue was corked is woken when the cork's inline write empties
/// the queue (no writer task runs then, so nothing else would wake it).
#[test]
fn a_sender_refused_under_a_cork_is_woken_when_the_queue_empties() {
    run(async {
        let (wr, server) = small_buffered_pair().await;
        let closed = tokio_util::sync::CancellationToken::new();
        let out = Outbox::new(wr, 64 * 1024, closed.clone(), None);
        let writer = tokio::spawn(out.clone().run_writer());
        let reader = read_frames(server, 2);
        let small = frame(1, 1000);
        let big = frame(2, 100 * 1024);
        let cork = out.cork();
        out.try_send(&small).expect("queued under the cork");
        let send = out.send(&big);
        tokio::pin!(send);
        assert!(
            futures::poll!(&mut send).is_pending(),
            "no room under the cork"
        );
        drop(cork);
        assert!(
            matches!(futures::poll!(&mut send), Poll::Ready(Ok(()))),
            "the queue emptied: the big frame is queued"
        );
        let got = tokio::time::timeout(WAIT, reader)
            .await
            .expect("both frames arrive")
            .expect("reader");
        assert_eq!(got, vec![small.clone(), big.clone()]);
        closed.cancel();
        tokio::time::timeout(WAIT, writer)
            .await
            .expect("the writer stops")
            .expect("writer");
    });
}

fn way() -> impl Strategy<Value = Way> {
    prop_oneof![
        Just(Way::Send),
        Just(Way::TrySend),
        Just(Way::Batched),
        Just(Way::Corked)
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0usize..200,
        1 => (BIG_PAYLOAD - 2)..(BIG_PAYLOAD + 2),
        2 => BIG_PAYLOAD..300_000,
        1 => 1_000_000usize..1_300_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn any_mix_of_frames_arrives_whole_and_in_order(
        plan in prop::collection::vec((size(), way()), 1..12),
    ) {
        let frames: Vec<(Frame, Way)> = plan
            .iter()
            .enumerate()
            .map(|(i, &(len, way))| (frame(i as u64, len), way))
            .collect();
        let got = run(through_a_socket(&frames));
        let sent: Vec<Frame> = frames.into_iter().map(|(f, _)| f).collect();
        prop_assert_eq!(got, sent);
    }
}
