//! The link handshake: hello both ways, then, with a mesh secret, a mutual HMAC
//! challenge–response (`docs/protocol.md`, "Handshake").

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::TcpEngine;
use crate::discovery::NodeId;
use crate::error::HandshakeError;
use crate::protocol::{Auth, Frame, Hello, Kind, PROTOCOL_VERSION};

type HmacSha256 = Hmac<Sha256>;

/// The HMAC a prover sends: it binds the role, both node ids, both nonces and the environment.
fn auth_mac(
    secret: &[u8],
    role: &[u8],
    prover: NodeId,
    verifier: NodeId,
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
    environment: &str,
) -> Result<HmacSha256, HandshakeError> {
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| HandshakeError::Key)?;
    mac.update(b"plume-mesh-auth-v1\0");
    mac.update(role);
    mac.update(&prover.0.to_be_bytes());
    mac.update(&verifier.0.to_be_bytes());
    mac.update(verifier_nonce);
    mac.update(prover_nonce);
    mac.update(environment.as_bytes());
    Ok(mac)
}

async fn read_frame(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
    expected: Kind,
) -> Result<Frame, HandshakeError> {
    loop {
        if let Some(f) = Frame::decode(buf, max)? {
            if f.kind != expected {
                return Err(HandshakeError::Unexpected {
                    expected,
                    got: f.kind,
                });
            }
            return Ok(f);
        }
        buf.reserve(4096);
        let n = rd.read_buf(buf).await.map_err(HandshakeError::Read)?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

/// A connection whose handshake succeeded.
pub(super) struct Handshaken {
    /// The peer.
    pub(super) peer: NodeId,
    /// The peer's key.
    pub(super) key: String,
    pub(super) rd: OwnedReadHalf,
    pub(super) wr: OwnedWriteHalf,
    /// What was read past the handshake.
    pub(super) buf: BytesMut,
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
    let nonce: [u8; 32] = rand::random();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        node: engine.node.to_string(),
        environment: engine.environment.clone(),
        key: engine.key.clone(),
        auth: engine.secret.is_some(),
        nonce: nonce.to_vec(),
    };
    let io = HandshakeError::Write;
    wr.write_all(&Frame::with(Kind::Hello, 0, &hello).to_bytes())
        .await
        .map_err(io)?;
    let max = engine.cfg.max_frame.min(64 * 1024);
    let first = read_frame(&mut rd, &mut buf, max, Kind::Hello).await?;
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
    if let Some(secret) = &engine.secret {
        if theirs.nonce.len() != 32 {
            return Err(HandshakeError::Challenge);
        }
        let (mine, other): (&[u8], &[u8]) = if expect.is_some() {
            (b"dial", b"accept")
        } else {
            (b"accept", b"dial")
        };
        let proof = auth_mac(
            secret,
            mine,
            engine.node,
            peer,
            &theirs.nonce,
            &nonce,
            &engine.environment,
        )?
        .finalize()
        .into_bytes()
        .to_vec();
        wr.write_all(&Frame::with(Kind::Auth, 0, &Auth { mac: proof }).to_bytes())
            .await
            .map_err(io)?;
        let f = read_frame(&mut rd, &mut buf, max, Kind::Auth).await?;
        let auth: Auth = f.parse()?;
        auth_mac(
            secret,
            other,
            peer,
            engine.node,
            &nonce,
            &theirs.nonce,
            &engine.environment,
        )?
        .verify_slice(&auth.mac)
        .map_err(|_| HandshakeError::Unauthenticated)?;
    }
    Ok(Handshaken {
        peer,
        key: theirs.key,
        rd,
        wr,
        buf,
    })
}
