//! The wire protocol: length-delimited postcard frames.
//!
//! Every frame is a little-endian `u32` length followed by that many bytes
//! of a postcard-encoded [`ClientFrame`] or [`ServerFrame`]. The first frame
//! each way is the handshake (`Hello`, then `Welcome` or `Refused`).

use serde::{Deserialize, Serialize};

use crate::base::error::Error;

/// Bumped whenever a frame changes incompatibly (3: a disconnected error
/// carries its reason; 4: errors may be `MissingBinding`, reasons
/// `Aborted`; 5: reasons may be `TimedOut`, arguments and results may
/// carry ids and stubs, fetch replies streamed bodies; 6: a client may
/// claim a WebSocket an object accepted, reasons may be `Unreplicated`;
/// 7: reasons may be `Moved`; 8: a listing may ask for the objects the
/// server serves alone, a call may carry its object's name).
pub const PROTOCOL_VERSION: u32 = 8;

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
        #[serde(deserialize_with = "bytes")]
        id: Vec<u8>,
        method: u32,
        #[serde(deserialize_with = "bytes")]
        args: Vec<u8>,
        /// The caller's trace id (0: none), which the server's spans join.
        trace: u128,
        /// The object's name, when its id was made from one: sent with a
        /// stub's first call, so that the server records it as a local
        /// caller's stub would.
        name: Option<String>,
    },
    /// The client dropped stub `stub`; the server may forget it.
    DropStub { stub: u64 },
    /// List the objects of namespace `class`, after id base `after`; the
    /// answer is a `Reply` to `call`. In a cluster, those of the whole
    /// cluster, or with `here` those the server serves alone (what one
    /// member asks the others).
    ListIds {
        call: u64,
        class: u32,
        after: Option<Vec<u8>>,
        limit: u32,
        here: bool,
    },
    /// The reader of streamed body `stream` (the number of the call that
    /// answered with it) took `chunks` chunks: the server may send as many
    /// more (see `base::streaming`).
    Credit { stream: u64, chunks: u32 },
    /// The reader let streamed body `stream` go: the server stops it.
    CancelStream { stream: u64 },
    /// The next chunk of streamed request body `stream` (numbered by the
    /// client), sent only against the server's credit.
    Chunk {
        stream: u64,
        #[serde(deserialize_with = "bytes")]
        bytes: Vec<u8>,
    },
    /// Streamed request body `stream` ended (`error`: it broke off).
    StreamEnd { stream: u64, error: Option<Error> },
    /// Take over WebSocket `socket` (with its `token`), which a fetch
    /// reply on this connection handed over: the bytes its client sends
    /// come as streamed body `stream` (numbered by the client); the answer
    /// is a `Reply` to `call`, and on success the bytes for the client
    /// follow as the streamed body `call`.
    ClaimSocket {
        call: u64,
        socket: u64,
        token: u128,
        stream: u64,
    },
}

/// [`ClientFrame::Call`] borrowing its bytes, for encoding: the same frame
/// on the wire, without copying the id and the arguments first.
pub struct CallRef<'a> {
    pub call: u64,
    pub stub: u64,
    pub class: u32,
    pub id: &'a [u8],
    pub method: u32,
    pub args: &'a [u8],
    pub trace: u128,
    pub name: Option<&'a str>,
}

impl Serialize for CallRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        // `Call` is variant 1 of `ClientFrame`; fields in its order. A
        // byte slice is a sequence of bytes, as a `Vec<u8>` is.
        let mut call = serializer.serialize_struct_variant("ClientFrame", 1, "Call", 8)?;
        call.serialize_field("call", &self.call)?;
        call.serialize_field("stub", &self.stub)?;
        call.serialize_field("class", &self.class)?;
        call.serialize_field("id", self.id)?;
        call.serialize_field("method", &self.method)?;
        call.serialize_field("args", self.args)?;
        call.serialize_field("trace", &self.trace)?;
        call.serialize_field("name", &self.name)?;
        call.end()
    }
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
        #[serde(deserialize_with = "bytes_or_error")]
        result: Result<Vec<u8>, Error>,
    },
    /// The next chunk of streamed body `stream` (the number of the call
    /// whose reply carries it), sent only against the client's credit.
    Chunk {
        stream: u64,
        #[serde(deserialize_with = "bytes")]
        bytes: Vec<u8>,
    },
    /// Streamed body `stream` ended (`error`: it broke off).
    StreamEnd { stream: u64, error: Option<Error> },
    /// The object took `chunks` chunks of streamed request body `stream`:
    /// the client may send as many more.
    Credit { stream: u64, chunks: u32 },
    /// The object let streamed request body `stream` go.
    CancelStream { stream: u64 },
}

/// Decodes a byte string that was encoded as a `Vec<u8>`. In postcard a
/// sequence of bytes and a byte string are the same on the wire (a length,
/// then the bytes); read as the latter, it is one copy, not a push per byte.
fn bytes<'de, D: serde::Deserializer<'de>>(decoder: D) -> Result<Vec<u8>, D::Error> {
    decoder.deserialize_bytes(BytesVisitor)
}

/// [`bytes`] for a reply's result.
fn bytes_or_error<'de, D: serde::Deserializer<'de>>(
    decoder: D,
) -> Result<Result<Vec<u8>, Error>, D::Error> {
    struct Bytes(Vec<u8>);
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(decoder: D) -> Result<Self, D::Error> {
            bytes(decoder).map(Bytes)
        }
    }
    Ok(Result::<Bytes, Error>::deserialize(decoder)?.map(|b| b.0))
}

struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }

    // Formats that hand byte strings over as sequences.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element()? {
            bytes.push(byte);
        }
        Ok(bytes)
    }
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

/// Appends one frame (length prefix and body) to `out`. On error `out` is
/// left as it was.
pub fn encode<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = match postcard::to_extend(frame, Append(out)) {
        Ok(_) => {
            u32::try_from(out.len() - start - 4).map_err(|_| Error::Codec("frame too large".into()))
        }
        Err(e) => Err(Error::Codec(format!("cannot encode a frame: {e}"))),
    };
    match encoded {
        Ok(len) => {
            out[start..start + 4].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Appends to a buffer that others' frames share.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Appends the frame of the reply to call `call`. A reply that cannot be
/// encoded (none can, with postcard and these types) becomes a codec
/// error: the caller hears something all the same.
pub fn encode_reply(call: u64, result: &Result<Vec<u8>, Error>, out: &mut Vec<u8>) {
    if encode(&ReplyRef { call, result }, out).is_err() {
        let result = &Err(Error::Codec("cannot encode the reply".into()));
        let _ = encode(&ReplyRef { call, result }, out);
    }
}

/// [`ServerFrame::Reply`] borrowing its result, for encoding: the same
/// frame on the wire.
struct ReplyRef<'a> {
    call: u64,
    result: &'a Result<Vec<u8>, Error>,
}

impl Serialize for ReplyRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        // `Reply` is variant 2 of `ServerFrame`.
        let mut reply = serializer.serialize_struct_variant("ServerFrame", 2, "Reply", 2)?;
        reply.serialize_field("call", &self.call)?;
        reply.serialize_field("result", self.result)?;
        reply.end()
    }
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
    /// The memory the reader holds: its buffer's room.
    pub fn footprint(&self) -> usize {
        self.buf.capacity()
    }

    /// Gives back the room of a large frame once it is taken, keeping what
    /// is pending and one read's worth.
    pub fn shrink(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.shrink_to(self.buf.len().max(READ_CHUNK));
    }

    /// Room to read into: the caller appends to this buffer.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        // Forget consumed bytes before growing, so the buffer stays bounded
        // by one frame plus one read.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // A frame begun whose length is known grows the buffer toward
        // exactly its size (its length was checked against the limit when
        // its header arrived): at most doubling per read, so room is not
        // taken before bytes arrive, and never past the frame.
        let wanted = self
            .buf
            .get(..4)
            .map(|head| 4 + u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize);
        match wanted {
            Some(wanted) if wanted > self.buf.len() + READ_CHUNK => {
                let len = self.buf.len();
                self.buf
                    .reserve_exact((wanted - len).min(len.max(READ_CHUNK)));
            }
            _ => self.buf.reserve(READ_CHUNK),
        }
        &mut self.buf
    }

    /// Whether bytes of an incomplete frame are waiting for the rest.
    pub fn has_partial(&self) -> bool {
        self.start < self.buf.len()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    /// xorshift64*: small, seedable, good enough to find shapes.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn valid_frames() -> Vec<Vec<u8>> {
        let client = [
            ClientFrame::Hello {
                version: PROTOCOL_VERSION,
                token: Some(b"token".to_vec()),
            },
            ClientFrame::Hello {
                version: 7,
                token: None,
            },
            ClientFrame::Call {
                call: 1,
                stub: 2,
                class: 0,
                id: vec![9; 32],
                method: 0xdead_beef,
                args: vec![1, 2, 3],
                trace: 0,
                name: Some("lobby".into()),
            },
            ClientFrame::Call {
                call: u64::MAX,
                stub: 0,
                class: u32::MAX,
                id: vec![],
                method: 0,
                args: vec![0; 300],
                trace: u128::MAX,
                name: None,
            },
            ClientFrame::DropStub { stub: 12345 },
            ClientFrame::ClaimSocket {
                call: 7,
                socket: 3,
                token: u128::MAX,
                stream: 9,
            },
        ];
        let server = [
            ServerFrame::Welcome {
                version: PROTOCOL_VERSION,
                namespaces: vec![NamespaceInfo {
                    index: 0,
                    class: "Counter".into(),
                    schema: "Counter{}".into(),
                    key: vec![1; 32],
                }],
            },
            ServerFrame::Refused {
                reason: "no".into(),
            },
            ServerFrame::Reply {
                call: 3,
                result: Ok(vec![4, 5]),
            },
            ServerFrame::Reply {
                call: 3,
                result: Err(Error::Overloaded("full".into())),
            },
        ];
        let mut out = Vec::new();
        for f in &client {
            let mut b = Vec::new();
            encode(f, &mut b).unwrap();
            out.push(b);
        }
        for f in &server {
            let mut b = Vec::new();
            encode(f, &mut b).unwrap();
            out.push(b);
        }
        out
    }

    #[test]
    fn a_borrowed_call_encodes_exactly_as_the_call_frame_it_stands_for() {
        let mut rng = Rng(0x5eed);
        for _ in 0..200 {
            let bytes = |rng: &mut Rng| {
                let len = rng.below(300);
                (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
            };
            let (id, args) = (bytes(&mut rng), bytes(&mut rng));
            let (call, stub, class, method) = (
                rng.next(),
                rng.next() >> rng.below(64),
                rng.next() as u32,
                rng.next() as u32,
            );
            let trace = u128::from(rng.next()) << rng.below(64);
            let named = rng.below(2) == 1;
            let mut owned = Vec::new();
            let frame = ClientFrame::Call {
                call,
                stub,
                class,
                id: id.clone(),
                method,
                args: args.clone(),
                trace,
                name: named.then(|| "a name".to_owned()),
            };
            encode(&frame, &mut owned).unwrap();
            let mut borrowed = Vec::new();
            let frame_ref = CallRef {
                call,
                stub,
                class,
                id: &id,
                method,
                args: &args,
                trace,
                name: named.then_some("a name"),
            };
            encode(&frame_ref, &mut borrowed).unwrap();
            assert_eq!(borrowed, owned);
        }
    }

    #[test]
    fn a_borrowed_reply_encodes_exactly_as_the_reply_frame_it_stands_for() {
        let results = [
            Ok(Vec::new()),
            Ok(vec![7; 300]),
            Err(Error::Panicked("boom".into())),
            Err(Error::Disconnected("gone".into())),
        ];
        for (call, result) in results.into_iter().enumerate() {
            let call = (call as u64) << 40;
            let mut borrowed = Vec::new();
            encode_reply(call, &result, &mut borrowed);
            let mut owned = Vec::new();
            encode(&ServerFrame::Reply { call, result }, &mut owned).unwrap();
            assert_eq!(borrowed, owned);
        }
    }

    #[test]
    fn a_frame_that_cannot_be_encoded_leaves_the_shared_buffer_as_it_was() {
        struct Unencodable;
        impl Serialize for Unencodable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut out = Vec::new();
        encode(&ServerFrame::Refused { reason: "x".into() }, &mut out).unwrap();
        let before = out.clone();
        assert!(matches!(
            encode(&Unencodable, &mut out),
            Err(Error::Codec(_))
        ));
        assert_eq!(out, before, "frames already there are kept whole");
    }

    #[test]
    fn valid_frames_round_trip() {
        let frame = ClientFrame::Call {
            call: 1,
            stub: 2,
            class: 3,
            id: vec![4; 32],
            method: 5,
            args: vec![6, 7],
            trace: 8,
            name: Some("nine".into()),
        };
        let mut bytes = Vec::new();
        encode(&frame, &mut bytes).unwrap();
        let mut reader = FrameReader::default();
        reader.buffer().extend_from_slice(&bytes[..bytes.len() - 1]);
        assert_eq!(
            reader.next::<ClientFrame>(1024).unwrap(),
            None,
            "a partial frame waits"
        );
        reader.buffer().push(bytes[bytes.len() - 1]);
        assert_eq!(reader.next::<ClientFrame>(1024).unwrap(), Some(frame));
    }

    #[test]
    fn an_oversized_length_is_refused_before_any_body_is_buffered() {
        let mut reader = FrameReader::default();
        reader.buffer().extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            reader.next::<ClientFrame>(1024),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                limit: 1024
            })
        );
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_malformed() {
        let mut bytes = Vec::new();
        encode(&ClientFrame::DropStub { stub: 1 }, &mut bytes).unwrap();
        bytes.push(0);
        let len = (bytes.len() - 4) as u32;
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        let mut reader = FrameReader::default();
        reader.buffer().extend_from_slice(&bytes);
        assert!(matches!(
            reader.next::<ClientFrame>(1024),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_million_random_and_mutated_frames_never_panic_the_decoder() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("frame fuzz seed {seed}");
        let mut rng = Rng(seed);
        let valid = valid_frames();
        let limit = 4096;
        let mut frames = 0u64;
        while frames < 1_000_000 {
            let mut bytes = valid[rng.below(valid.len())].clone();
            match rng.below(6) {
                // Pure noise.
                0 => {
                    let n = rng.below(64);
                    bytes = (0..n).map(|_| rng.next() as u8).collect();
                }
                // Flip bytes of a valid frame (length prefix included).
                1 | 2 => {
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(bytes.len());
                        bytes[i] ^= 1 << rng.below(8);
                    }
                }
                // Truncate.
                3 => bytes.truncate(rng.below(bytes.len())),
                // Append noise and fix the length to cover it.
                4 => {
                    for _ in 0..rng.below(16) {
                        bytes.push(rng.next() as u8);
                    }
                    let len = (bytes.len() - 4) as u32;
                    bytes[..4].copy_from_slice(&len.to_le_bytes());
                }
                // A body of noise under a plausible length.
                _ => {
                    let n = rng.below(200);
                    bytes = (n as u32).to_le_bytes().to_vec();
                    bytes.extend((0..n).map(|_| rng.next() as u8));
                }
            }
            let mut client_side = FrameReader::default();
            client_side.buffer().extend_from_slice(&bytes);
            let _ = client_side.next::<ServerFrame>(limit);
            let mut server_side = FrameReader::default();
            server_side.buffer().extend_from_slice(&bytes);
            // Keep reading until it wants more bytes or errs: never loops, never panics.
            while let Ok(Some(_)) = server_side.next::<ClientFrame>(limit) {}
            frames += 1;
        }
    }
}
