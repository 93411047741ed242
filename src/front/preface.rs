//! h2c with prior knowledge on plain binds: a connection whose first bytes
//! are HTTP/2's connection preface (RFC 9113 section 3.4) is served as
//! HTTP/2, any other as HTTP/1.x. [`sniff`] reads only while the bytes
//! still match the preface and hands them back in front of the stream
//! ([`Prefixed`]), so hyper reads the connection from its first byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::Io;

/// What an HTTP/2 client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes stop matching [`PREFACE`] or hold it whole;
/// returns the stream with those bytes put back, and whether it is HTTP/2.
/// A read takes what has come (up to 4 KiB), so an HTTP/1.1 request head
/// usually arrives whole in the first one and hyper reads it from here
/// without another system call.
pub async fn sniff(mut io: Box<dyn Io>) -> io::Result<(Box<dyn Io>, bool)> {
    let mut seen = Vec::with_capacity(4096);
    while seen.len() < PREFACE.len() && PREFACE.starts_with(&seen) {
        if seen.len() == seen.capacity() || io.read_buf(&mut seen).await? == 0 {
            break;
        }
    }
    let h2 = seen.starts_with(PREFACE);
    Ok((
        Box::new(Prefixed {
            head: seen,
            at: 0,
            io,
        }),
        h2,
    ))
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    io: S,
}

impl<S> Prefixed<S> {
    /// `io` with `head` read first.
    pub fn new(head: Vec<u8>, io: S) -> Prefixed<S> {
        Prefixed { head, at: 0, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let n = (this.head.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

super::write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(sent: &[u8]) -> (bool, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        drop(client);
        let (mut io, h2) = sniff(Box::new(server)).await.unwrap();
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        (h2, all)
    }

    #[tokio::test]
    async fn the_preface_is_http2_and_every_byte_is_read_again() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\0\0\0\x04\0\0\0\0\0");
        assert_eq!(sniffed(&sent).await, (true, sent));
        let h1 = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        assert_eq!(sniffed(&h1).await, (false, h1));
        // A method that begins like the preface, and a stream cut short.
        let pr = b"PRIX / HTTP/1.1\r\n\r\n".to_vec();
        assert_eq!(sniffed(&pr).await, (false, pr));
        assert_eq!(sniffed(b"PRI *").await, (false, b"PRI *".to_vec()));
    }
}
