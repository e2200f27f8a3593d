//! Accepts etcd clients that put a URL scheme in the HTTP/2 `:authority`.
//!
//! etcd's Go client, given an endpoint like `http://127.0.0.1:2379`, sends
//! `:authority: http://127.0.0.1:2379` on connections it opens to one
//! endpoint (etcdctl `endpoint status`, anything with `--cluster`). gRPC-Go
//! servers accept that; the `h2` crate under tonic rejects it as malformed
//! and resets the stream before any handler runs. This module sits between
//! the TCP socket and `h2`: it watches the client's first header block on a
//! connection and, only if its authority carries a scheme, rewrites every
//! header block of that connection with the scheme removed. Other
//! connections pass through untouched after their first block.
//!
//! Rewriting means decoding the client's HPACK (tracking the client's
//! dynamic table) and encoding anew for `h2` (tracking the table `h2` keeps):
//! once a connection is rewritten, every block on it must be, or the two
//! tables would disagree. It never changes anything but header blocks, and
//! never the `:authority` of a well-formed request.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame `h2` accepts before SETTINGS say otherwise; rewritten
/// blocks are split into frames no larger.
const FRAME_PAYLOAD_BYTES_MAX: usize = 16_384;
/// Bound on a header block being collected across CONTINUATION frames.
const HEADER_BLOCK_BYTES_MAX: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No header block seen yet.
    Undecided,
    Rewrite,
    PassThrough,
}

/// A header block being collected: HEADERS frame metadata plus fragments.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    /// Stream dependency and weight, if the HEADERS frame had PRIORITY.
    priority: Option<[u8; 5]>,
    block: BytesMut,
    /// The raw frames, replayed unchanged if the connection passes through.
    raw: BytesMut,
}

/// A connection whose client-to-server bytes have `:authority` repaired.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    preface_seen: bool,
    /// Bytes read from the socket, not yet processed.
    input: BytesMut,
    /// Bytes ready for `h2`.
    output: BytesMut,
    pending: Option<PendingBlock>,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Undecided,
            preface_seen: false,
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            encoder: loona_hpack::Encoder::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Moves every complete unit of `input` to `output`, rewriting header
    /// blocks as the mode requires.
    fn process(&mut self) -> io::Result<()> {
        if !self.preface_seen {
            if self.input.len() < PREFACE.len() {
                return Ok(());
            }
            self.preface_seen = true;
            let preface = self.input.split_to(PREFACE.len());
            self.output.extend_from_slice(&preface);
        }
        loop {
            if self.mode == Mode::PassThrough && self.pending.is_none() {
                let rest = self.input.split();
                self.output.extend_from_slice(&rest);
                return Ok(());
            }
            if self.input.len() < FRAME_HEADER_BYTES {
                return Ok(());
            }
            let length = (usize::from(self.input[0]) << 16)
                | (usize::from(self.input[1]) << 8)
                | usize::from(self.input[2]);
            if self.input.len() < FRAME_HEADER_BYTES + length {
                return Ok(());
            }
            let kind = self.input[3];
            let flags = self.input[4];
            let stream_id =
                u32::from_be_bytes([self.input[5], self.input[6], self.input[7], self.input[8]])
                    & 0x7fff_ffff;
            let frame = self.input.split_to(FRAME_HEADER_BYTES + length);
            match kind {
                FRAME_HEADERS => self.start_block(frame, flags, stream_id)?,
                FRAME_CONTINUATION if self.pending.is_some() => {
                    self.continue_block(frame, flags)?
                }
                // Anything else (including a stray CONTINUATION, which h2
                // will reject itself) passes unchanged.
                _ => self.output.extend_from_slice(&frame),
            }
        }
    }

    fn start_block(&mut self, frame: BytesMut, flags: u8, stream_id: u32) -> io::Result<()> {
        let mut payload = &frame[FRAME_HEADER_BYTES..];
        let mut padding = 0usize;
        if flags & FLAG_PADDED != 0 {
            let Some((&pad, rest)) = payload.split_first() else {
                self.output.extend_from_slice(&frame);
                return Ok(());
            };
            padding = usize::from(pad);
            payload = rest;
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            if payload.len() < 5 {
                self.output.extend_from_slice(&frame);
                return Ok(());
            }
            let mut fields = [0u8; 5];
            fields.copy_from_slice(&payload[..5]);
            priority = Some(fields);
            payload = &payload[5..];
        }
        if padding > payload.len() {
            // Malformed: let h2 see and reject it as it is.
            self.output.extend_from_slice(&frame);
            return Ok(());
        }
        let fragment = &payload[..payload.len() - padding];
        let mut block = BytesMut::with_capacity(fragment.len());
        block.extend_from_slice(fragment);
        let mut raw = BytesMut::with_capacity(frame.len());
        raw.extend_from_slice(&frame);
        self.pending = Some(PendingBlock {
            stream_id,
            end_stream: flags & FLAG_END_STREAM != 0,
            priority,
            block,
            raw,
        });
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    fn continue_block(&mut self, frame: BytesMut, flags: u8) -> io::Result<()> {
        if let Some(pending) = &mut self.pending {
            pending
                .block
                .extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
            pending.raw.extend_from_slice(&frame);
            if pending.block.len() > HEADER_BLOCK_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header block too large",
                ));
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block()?;
        }
        Ok(())
    }

    fn finish_block(&mut self) -> io::Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        if self.mode == Mode::PassThrough {
            self.output.extend_from_slice(&pending.raw);
            return Ok(());
        }
        let headers = match self.decoder.decode(&pending.block) {
            Ok(headers) => headers,
            Err(error) => {
                if self.mode == Mode::Undecided {
                    // Not ours to judge: hand the original to h2.
                    self.mode = Mode::PassThrough;
                    self.output.extend_from_slice(&pending.raw);
                    return Ok(());
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad header block: {error:?}"),
                ));
            }
        };
        if self.mode == Mode::Undecided {
            let needs_fix = headers.iter().any(|(name, value)| {
                name.as_slice() == b":authority" && value.windows(3).any(|w| w == b"://")
            });
            if !needs_fix {
                self.mode = Mode::PassThrough;
                self.output.extend_from_slice(&pending.raw);
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .map(|(name, value)| {
                if name.as_slice() == b":authority" {
                    (name, strip_scheme(&value).to_vec())
                } else {
                    (name, value)
                }
            })
            .collect();
        let block = self.encoder.encode(
            fixed
                .iter()
                .map(|(name, value)| (name.as_slice(), value.as_slice())),
        );
        self.emit_block(
            pending.stream_id,
            pending.end_stream,
            pending.priority,
            &block,
        );
        Ok(())
    }

    fn emit_block(
        &mut self,
        stream_id: u32,
        end_stream: bool,
        priority: Option<[u8; 5]>,
        block: &[u8],
    ) {
        let first_room = FRAME_PAYLOAD_BYTES_MAX - if priority.is_some() { 5 } else { 0 };
        let first_len = block.len().min(first_room);
        let mut flags = 0u8;
        if end_stream {
            flags |= FLAG_END_STREAM;
        }
        if priority.is_some() {
            flags |= FLAG_PRIORITY;
        }
        if first_len == block.len() {
            flags |= FLAG_END_HEADERS;
        }
        let payload_len = first_len + if priority.is_some() { 5 } else { 0 };
        put_frame_header(
            &mut self.output,
            payload_len,
            FRAME_HEADERS,
            flags,
            stream_id,
        );
        if let Some(fields) = priority {
            self.output.extend_from_slice(&fields);
        }
        self.output.extend_from_slice(&block[..first_len]);
        let mut rest = &block[first_len..];
        while !rest.is_empty() {
            let len = rest.len().min(FRAME_PAYLOAD_BYTES_MAX);
            let flags = if len == rest.len() {
                FLAG_END_HEADERS
            } else {
                0
            };
            put_frame_header(&mut self.output, len, FRAME_CONTINUATION, flags, stream_id);
            self.output.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        }
    }
}

fn put_frame_header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, stream_id: u32) {
    out.put_u8((length >> 16) as u8);
    out.put_u8((length >> 8) as u8);
    out.put_u8(length as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id & 0x7fff_ffff);
}

/// `http://host:port/` → `host:port`.
fn strip_scheme(value: &[u8]) -> &[u8] {
    let without_scheme = match value.windows(3).position(|w| w == b"://") {
        Some(at) => &value[at + 3..],
        None => value,
    };
    match without_scheme.iter().position(|&byte| byte == b'/') {
        Some(at) => &without_scheme[..at],
        None => without_scheme,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Once a connection passes through, read straight into the
            // caller's buffer: no copy, no parsing.
            if this.mode == Mode::PassThrough
                && this.pending.is_none()
                && this.input.is_empty()
                && this.preface_seen
            {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        // End of stream: hand over whatever is buffered.
                        let rest = this.input.split();
                        this.output.extend_from_slice(&rest);
                        if this.output.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.input.extend_from_slice(filled);
                    this.process()?;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn headers_frame(block: &[u8], stream_id: u32, flags: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, block.len(), FRAME_HEADERS, flags, stream_id);
        out.extend_from_slice(block);
        out.to_vec()
    }

    async fn run(input: Vec<u8>) -> Vec<u8> {
        let mut fixed = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.expect("read");
        out
    }

    fn decode_blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut at = PREFACE.len();
        let mut blocks = Vec::new();
        while at + FRAME_HEADER_BYTES <= bytes.len() {
            let length = (usize::from(bytes[at]) << 16)
                | (usize::from(bytes[at + 1]) << 8)
                | usize::from(bytes[at + 2]);
            let kind = bytes[at + 3];
            let payload = &bytes[at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + length];
            if kind == FRAME_HEADERS {
                blocks.push(decoder.decode(payload).expect("decodable"));
            }
            at += FRAME_HEADER_BYTES + length;
        }
        blocks
    }

    fn request(authority: &str) -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":path", b"/etcdserverpb.Maintenance/Status".to_vec()),
            (b":authority", authority.as_bytes().to_vec()),
            (b"content-type", b"application/grpc".to_vec()),
        ]
    }

    fn authority_of(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(name, _)| name.as_slice() == b":authority")
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_scheme_in_the_authority_is_removed_from_every_block() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes unchanged.
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        for stream in [1u32, 3] {
            let headers = request("http://127.0.0.1:2379");
            let block = encoder.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())));
            input.extend_from_slice(&headers_frame(&block, stream, FLAG_END_HEADERS));
        }
        let output = run(input).await;
        let blocks = decode_blocks(&output);
        assert_eq!(blocks.len(), 2);
        for block in blocks {
            assert_eq!(authority_of(&block), b"127.0.0.1:2379".to_vec());
            assert!(block.iter().any(|(name, value)| name.as_slice() == b":path"
                && value.as_slice() == b"/etcdserverpb.Maintenance/Status"));
        }
    }

    #[tokio::test]
    async fn a_well_formed_connection_passes_through_byte_for_byte() {
        let mut encoder = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for stream in [1u32, 3] {
            let headers = request("127.0.0.1:2379");
            let block = encoder.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())));
            input.extend_from_slice(&headers_frame(
                &block,
                stream,
                FLAG_END_HEADERS | FLAG_END_STREAM,
            ));
        }
        input.extend_from_slice(&[0, 0, 2, 0, 1, 0, 0, 0, 1, 0xab, 0xcd]);
        let output = run(input.clone()).await;
        assert_eq!(output, input);
    }

    #[test]
    fn strip_scheme_keeps_host_and_port() {
        assert_eq!(strip_scheme(b"http://10.0.0.1:2379"), b"10.0.0.1:2379");
        assert_eq!(strip_scheme(b"https://h:1/"), b"h:1");
        assert_eq!(strip_scheme(b"h:1"), b"h:1");
    }
}
