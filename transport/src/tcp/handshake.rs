//! The link handshake (`docs/protocol.md`, "Handshake"): without a mesh secret, a `hello` frame
//! each way in the clear; with one, the two messages of a Noise `NNpsk0` handshake carrying the
//! hellos, after which the link is encrypted ([`noise`](super::noise)).

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::TcpEngine;
use snow::HandshakeState;

use super::noise::{self, MAX_RECORD, Opener, Sealer};
use crate::discovery::NodeId;
use crate::error::HandshakeError;
use crate::protocol::{Frame, Hello, Kind, PROTOCOL_VERSION};

/// The most a hello frame may take during the handshake.
const MAX_HELLO: usize = 64 * 1024;

async fn fill(rd: &mut OwnedReadHalf, buf: &mut BytesMut) -> Result<(), HandshakeError> {
    buf.reserve(4096);
    let n = rd.read_buf(buf).await.map_err(HandshakeError::Read)?;
    if n == 0 {
        return Err(HandshakeError::Closed);
    }
    Ok(())
}

async fn read_hello_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Frame, HandshakeError> {
    loop {
        if let Some(f) = Frame::decode(buf, max)? {
            return Ok(f);
        }
        fill(rd, buf).await?;
    }
}

async fn read_record(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<BytesMut, HandshakeError> {
    loop {
        if let Some(r) = noise::take_record(buf) {
            return Ok(r);
        }
        fill(rd, buf).await?;
    }
}

/// Send our hello as the next Noise handshake message.
async fn send_hello(
    state: &mut HandshakeState,
    wr: &mut OwnedWriteHalf,
    hello: &[u8],
) -> Result<(), HandshakeError> {
    let mut msg = vec![0; MAX_RECORD];
    let n = state
        .write_message(hello, &mut msg)
        .map_err(|_| HandshakeError::Oversized)?;
    let mut out = BytesMut::with_capacity(2 + n);
    noise::put_record(&mut out, &msg[..n]);
    wr.write_all(&out).await.map_err(HandshakeError::Write)
}

/// Read the peer's hello from the next Noise handshake message.
async fn read_hello(
    state: &mut HandshakeState,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Frame, HandshakeError> {
    let record = read_record(rd, buf).await?;
    let mut msg = vec![0; MAX_RECORD];
    let n = state
        .read_message(&record, &mut msg)
        .map_err(|_| HandshakeError::Unauthenticated)?;
    Frame::decode(&mut BytesMut::from(&msg[..n]), max)?.ok_or(HandshakeError::Truncated)
}

/// A connection whose handshake succeeded.
pub(super) struct Handshaken {
    /// The peer.
    pub(super) peer: NodeId,
    /// The peer's key.
    pub(super) key: String,
    pub(super) rd: OwnedReadHalf,
    pub(super) wr: OwnedWriteHalf,
    /// What was read past the handshake (records, on an encrypted link).
    pub(super) buf: BytesMut,
    /// Frames already opened (an encrypted link's first record, on the accepting side).
    pub(super) plain: BytesMut,
    /// The link's ciphers, with a mesh secret.
    pub(super) cipher: Option<(Sealer, Opener)>,
}

/// Check the peer's hello; the peer's node id when it is acceptable.
fn check(
    engine: &TcpEngine,
    first: &Frame,
    expect: Option<NodeId>,
) -> Result<(NodeId, String), HandshakeError> {
    if first.kind != Kind::Hello {
        return Err(HandshakeError::Unexpected {
            expected: Kind::Hello,
            got: first.kind,
        });
    }
    let theirs: Hello = first.parse()?;
    if theirs.protocol != PROTOCOL_VERSION {
        return Err(HandshakeError::Protocol(theirs.protocol));
    }
    if theirs.environment != engine.environment {
        return Err(HandshakeError::Environment(theirs.environment));
    }
    let Ok(peer) = u128::from_str_radix(&theirs.node, 16).map(NodeId) else {
        return Err(HandshakeError::NodeId(theirs.node));
    };
    if peer == engine.node {
        return Err(HandshakeError::SelfLink);
    }
    if let Some(want) = expect
        && want != peer
    {
        return Err(HandshakeError::WrongPeer { want, got: peer });
    }
    if theirs.auth != engine.secret.is_some() {
        return Err(HandshakeError::SecretMismatch);
    }
    Ok((peer, theirs.key))
}

/// Run the handshake on a fresh connection. `expect` is the node the dialer meant to reach
/// (None on the accepting side).
pub(super) async fn handshake(
    engine: &TcpEngine,
    stream: TcpStream,
    expect: Option<NodeId>,
) -> Result<Handshaken, HandshakeError> {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let secret = engine.secret.is_some();
    let hello = Frame::with(
        Kind::Hello,
        0,
        &Hello {
            protocol: PROTOCOL_VERSION,
            node: engine.node.to_string(),
            environment: engine.environment.clone(),
            key: engine.key.clone(),
            auth: secret,
            // Kept for the wire format of links without a secret; nothing reads it any more.
            nonce: if secret {
                Vec::new()
            } else {
                rand::random::<[u8; 32]>().to_vec()
            },
        },
    )
    .to_bytes();
    let max = engine.cfg.max_frame.min(MAX_HELLO);
    let Some(secret) = &engine.secret else {
        wr.write_all(&hello).await.map_err(HandshakeError::Write)?;
        let first = read_hello_frame(&mut rd, &mut buf, max).await?;
        let (peer, key) = check(engine, &first, expect)?;
        return Ok(Handshaken {
            peer,
            key,
            rd,
            wr,
            buf,
            plain: BytesMut::new(),
            cipher: None,
        });
    };
    let dialer = expect.is_some();
    let mut state = noise::handshake_state(secret, &engine.environment, dialer)?;
    let (peer, key) = if dialer {
        // -> psk, e (our hello, sealed with the key of the secret); <- e, ee (theirs)
        send_hello(&mut state, &mut wr, &hello).await?;
        let first = read_hello(&mut state, &mut rd, &mut buf, max).await?;
        check(engine, &first, expect)?
    } else {
        // The dialer proves it knows the secret before this side says anything.
        let first = read_hello(&mut state, &mut rd, &mut buf, max).await?;
        let checked = check(engine, &first, expect)?;
        send_hello(&mut state, &mut wr, &hello).await?;
        checked
    };
    let (sealer, mut opener) = noise::split(state)?;
    let mut plain = BytesMut::new();
    if !dialer {
        // Key confirmation: a replayed first message gets an answer, but no link. The link
        // exists once the dialer's first record (its table snapshot) opens.
        loop {
            opener.open(&mut buf, &mut plain)?;
            if !plain.is_empty() {
                break;
            }
            fill(&mut rd, &mut buf).await?;
        }
    }
    Ok(Handshaken {
        peer,
        key,
        rd,
        wr,
        buf,
        plain,
        cipher: Some((sealer, opener)),
    })
}
