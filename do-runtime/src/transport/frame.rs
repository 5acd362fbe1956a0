//! The wire protocol: length-delimited postcard frames.
//!
//! Every frame is a little-endian `u32` length followed by that many bytes
//! of a postcard-encoded [`ClientFrame`] or [`ServerFrame`]. The first frame
//! each way is the handshake (`Hello`, then `Welcome` or `Refused`).

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bumped whenever a frame changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The handshake: the protocol version and the shared secret, if any.
    Hello {
        version: u32,
        token: Option<Vec<u8>>,
    },
    /// A call through remote stub `stub` (numbered by the client).
    Call {
        call: u64,
        stub: u64,
        class: u32,
        id: Vec<u8>,
        method: u32,
        args: Vec<u8>,
    },
    /// The client dropped stub `stub`; the server may forget it.
    DropStub { stub: u64 },
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The handshake accepted: the namespaces served.
    Welcome {
        version: u32,
        namespaces: Vec<NamespaceInfo>,
    },
    /// The handshake refused, with the reason.
    Refused { reason: String },
    /// The reply to call `call`.
    Reply {
        call: u64,
        result: Result<Vec<u8>, Error>,
    },
}

/// One namespace as the handshake describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub index: u32,
    pub class: String,
    pub schema: String,
    /// The key ids of this namespace are made and checked with.
    pub key: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends one frame (length prefix and body) to `out`.
pub fn encode<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(frame, taken)
        .map_err(|e| Error::Codec(format!("cannot encode a frame: {e}")))?;
    let len =
        u32::try_from(out.len() - start - 4).map_err(|_| Error::Codec("frame too large".into()))?;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// How much room each read gets.
const READ_CHUNK: usize = 16 * 1024;

/// Accumulates bytes read from a socket and yields whole frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// Room to read into: the caller appends to this buffer.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        // Forget consumed bytes before growing, so the buffer stays bounded
        // by one frame plus one read.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// The next whole frame, if the buffer holds one. Checks the declared
    /// length against `limit` before waiting for the body, so a peer cannot
    /// make us buffer more than `limit` bytes.
    pub fn next<T: for<'de> Deserialize<'de>>(
        &mut self,
        limit: usize,
    ) -> Result<Option<T>, FrameError> {
        let rest = &self.buf[self.start..];
        let Some(head) = rest.get(..4) else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(head);
        let len = u32::from_le_bytes(len) as usize;
        if len > limit {
            return Err(FrameError::TooLarge { len, limit });
        }
        let Some(body) = rest.get(4..4 + len) else {
            return Ok(None);
        };
        let frame = decode_body(body)?;
        self.start += 4 + len;
        Ok(Some(frame))
    }
}

/// Decodes one frame body, which must be consumed exactly.
pub fn decode_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((frame, [])) => Ok(frame),
        Ok((_, rest)) => Err(FrameError::Malformed(format!(
            "{} bytes after the frame",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}
