//! Noticing an HTTP/1.1 client that leaves while its request is in flight,
//! without reading its connection.
//!
//! hyper can notice it on its own: while a request is in flight it keeps a
//! read open on the connection, and the end of the stream cancels the
//! request. But that read takes a buffer of its own each time (8 KiB or
//! more, on every connection with a request in flight), and it cost the
//! supervisor a quarter of its memory on 16 KiB uploads at 256
//! connections. So plain HTTP/1.1 connections are served with hyper's
//! `half_close`, which turns that read off, and corral watches the socket
//! itself:
//!
//! - the socket is shared ([`Socket`]): hyper reads and writes it through
//!   [`SocketIo`], the request watches it through its [`Hangup`];
//! - the watch waits on the socket's readiness, which epoll reports for
//!   the end of the stream (`EPOLLRDHUP`) as for bytes, and looks with a
//!   one-byte `MSG_PEEK`: no bytes and the end of the stream means the
//!   client left (nginx judges it the same way).
//!
//! Bytes the client sent that are still unread (a body not read yet, a
//! pipelined request) are not a hang-up: whoever reads them meets the end
//! after them. The watch then waits without a wake-up of its own and looks
//! again the next time its request is polled, and hyper sees the end when
//! it reads. A client that shuts down only its sending side (a half close)
//! is taken as gone, as hyper took it before.
//!
//! TLS connections keep hyper's own read (the bytes on the socket are TLS
//! records, whose alerts a peek cannot tell apart from data), and HTTP/2
//! needs neither: hyper reads its connections all the time.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use nix::sys::socket::{MsgFlags, Shutdown};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A client's connected socket, shared by the connection's I/O and the
/// watch on its request.
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_read_ready(cx),
            Socket::Unix(s) => s.poll_read_ready(cx),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Socket::Tcp(s) => s.poll_write_ready(cx),
            Socket::Unix(s) => s.poll_write_ready(cx),
        }
    }

    /// Runs `f` while the socket is ready for `interest`; its `WouldBlock`
    /// clears the readiness it found (not one that came after).
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Socket::Tcp(s) => s.try_io(interest, f),
            Socket::Unix(s) => s.try_io(interest, f),
        }
    }

    /// Calls `f` with the socket as soon as it is ready for `interest`,
    /// until it does not answer `WouldBlock`.
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        interest: Interest,
        mut f: impl FnMut(BorrowedFd<'_>) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            if interest.is_readable() {
                ready!(self.poll_read_ready(cx))?;
            } else {
                ready!(self.poll_write_ready(cx))?;
            }
            match self.try_io(interest, || f(self.as_fd())) {
                Err(e) if retry(&e) => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

/// How long a connection corral ended may linger ([`Socket::linger`]),
/// and how many of the client's bytes it reads meanwhile.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

impl Socket {
    /// The last step of every connection: its sending side is shut (a
    /// FIN after what was written; on TLS, corral's close_notify went
    /// before it), and what the client still sends is read and dropped
    /// until it closes too, for at most [`LINGER`] and [`LINGER_BYTES`].
    /// Closed with unread bytes (the WINDOW_UPDATEs an HTTP/2 client sends
    /// for the last DATA frames, a pipelined request), a socket sends RST,
    /// and a client that gets RST throws away what it had received but
    /// not yet read: the end of the last response. This is the "lingering
    /// close" of RFC 9112 section 9.6, as nginx and Apache do it. The
    /// connection keeps its place under `max_connections` meanwhile, so
    /// clients that never close cannot make corral hold more sockets.
    pub async fn linger(&self) {
        let _ = nix::sys::socket::shutdown(self.as_fd().as_raw_fd(), Shutdown::Write);
        let mut sink = [0u8; 4096];
        let mut read = 0;
        let drain = std::future::poll_fn(|cx| {
            loop {
                let got = self.poll_io(cx, Interest::READABLE, |fd| {
                    let n = nix::unistd::read(fd, &mut sink)?;
                    Ok(n)
                });
                match ready!(got) {
                    Ok(n) if n > 0 && read + n <= LINGER_BYTES => read += n,
                    _ => return Poll::Ready(()),
                }
            }
        });
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl super::conn::Unsent for SocketIo {
    /// The socket's send queue (`SIOCOUTQ`): on TCP what the client has
    /// not acknowledged, on a Unix socket what it has not read.
    fn unsent(&self) -> Option<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ on a socket) writes one int at the
        // pointer, which points at `n`.
        let r = unsafe { libc::ioctl(self.0.as_fd().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            usize::try_from(n).ok()
        } else {
            None
        }
    }
}

/// The connection's reads and writes, for hyper.
pub struct SocketIo(pub Arc<Socket>);

impl AsyncRead for SocketIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: read(2) only writes into the buffer, and only the bytes
        // it reports are marked filled.
        let dst = unsafe { buf.unfilled_mut() };
        let len = dst.len();
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            let mut drained = None;
            let read = self.0.try_io(Interest::READABLE, || {
                // SAFETY: `dst` is valid for `len` bytes of writes.
                let n =
                    unsafe { libc::read(self.0.as_fd().as_raw_fd(), dst.as_mut_ptr().cast(), len) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = n as usize;
                // A read that leaves room in the buffer emptied the socket:
                // clear its readiness now rather than learn it from one more
                // read (tokio's own streams do the same). Told as WouldBlock,
                // so that only the readiness seen before the read is cleared.
                if 0 < n && n < len {
                    drained = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let n = match (read, drained) {
                (_, Some(n)) | (Ok(n), None) => n,
                (Err(e), None) if retry(&e) => continue,
                (Err(e), None) => return Poll::Ready(Err(e)),
            };
            // SAFETY: read(2) wrote these `n` bytes.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
    }
}

/// An error that means "try again": the socket was not ready after all, or
/// a signal came.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

impl AsyncWrite for SocketIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_io(cx, Interest::WRITABLE, |fd| {
            Ok(nix::unistd::write(fd, buf)?)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // At most IOV_MAX at once, as the standard library's writes do.
        let bufs = &bufs[..bufs.len().min(1024)];
        self.0.poll_io(cx, Interest::WRITABLE, |fd| {
            Ok(nix::sys::uio::writev(fd, bufs)?)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.0.as_fd().as_raw_fd();
        Poll::Ready(Ok(nix::sys::socket::shutdown(fd, Shutdown::Write)?))
    }
}

/// The watch on one request's connection.
#[derive(Clone)]
pub struct Hangup(Arc<Socket>);

impl Hangup {
    pub fn new(socket: Arc<Socket>) -> Hangup {
        Hangup(socket)
    }

    /// Ready once the client has closed its end (or reset the connection)
    /// with nothing left unread. While bytes wait unread it stays pending
    /// without a wake-up of its own: poll it again when its request is.
    pub fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut byte = [0u8; 1];
        let peeked = self.0.poll_io(cx, Interest::READABLE, |fd| {
            let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
            Ok(nix::sys::socket::recv(fd.as_raw_fd(), &mut byte, flags)?)
        });
        match peeked {
            Poll::Pending | Poll::Ready(Ok(1..)) => Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
        }
    }

    /// Returns once the client leaves; never without a watch.
    pub async fn gone(hangup: Option<&Hangup>) {
        match hangup {
            Some(h) => std::future::poll_fn(|cx| h.poll(cx)).await,
            None => std::future::pending().await,
        }
    }

    /// Runs `work` until it is done (`Some`) or the client leaves (`None`).
    /// Without a watch, `work` runs to its end. (A future of its own, not
    /// an `async fn`, which would hold `work` twice: as its argument and
    /// pinned.)
    pub fn until<F: Future>(hangup: Option<&Hangup>, work: F) -> Until<'_, F> {
        Until { work, hangup }
    }
}

pin_project_lite::pin_project! {
    /// [`Hangup::until`]'s future.
    pub struct Until<'a, F> {
        #[pin]
        work: F,
        hangup: Option<&'a Hangup>,
    }
}

impl<F: Future> Future for Until<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.work.poll(cx) {
            return Poll::Ready(Some(out));
        }
        match this.hangup {
            Some(h) if h.poll(cx).is_ready() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair over loopback: the client's end and corral's.
    async fn pair() -> (TcpStream, Arc<Socket>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, Arc::new(Socket::Tcp(server)))
    }

    /// Whether the hangup is seen within `wait`.
    async fn seen(hangup: &Hangup, wait: Duration) -> bool {
        let watch = Hangup::gone(Some(hangup));
        tokio::time::timeout(wait, watch).await.is_ok()
    }

    const SOON: Duration = Duration::from_millis(200);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_client_that_closes_is_seen_and_one_that_waits_is_not() {
        let (client, socket) = pair().await;
        let hangup = Hangup::new(socket);
        assert!(!seen(&hangup, SOON).await, "a connected client left");
        drop(client);
        assert!(seen(&hangup, LONG).await, "the close went unseen");
    }

    #[tokio::test]
    async fn bytes_left_unread_are_no_hangup_until_they_are_read() {
        let (mut client, socket) = pair().await;
        let mut io = SocketIo(socket.clone());
        let hangup = Hangup::new(socket);
        // A pipelined request, then the client's end of the stream.
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        assert!(
            !seen(&hangup, SOON).await,
            "unread bytes taken for a hangup"
        );
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            seen(&hangup, LONG).await,
            "the end after the bytes went unseen"
        );
    }

    #[tokio::test]
    async fn reads_and_writes_go_through_whole_in_both_directions() {
        let (mut client, socket) = pair().await;
        let mut io = SocketIo(socket);
        // More than a socket buffer each way, so that both sides wait on
        // readiness, and reads that fill their buffer and reads that do not.
        let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let to_corral = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&to_corral).await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = vec![0u8; sent.len()];
        let mut at = 0;
        while at < got.len() {
            let end = (at + 7000).min(got.len());
            let n = io.read(&mut got[at..end]).await.unwrap();
            assert!(n > 0, "early end at {at}");
            at += n;
        }
        assert!(got == sent, "the bytes came changed");
        // One writev of two slices (as hyper writes a head and a body),
        // then the rest.
        let halves = [
            io::IoSlice::new(&sent[..1 << 20]),
            io::IoSlice::new(&sent[1 << 20..]),
        ];
        let n = io.write_vectored(&halves).await.unwrap();
        assert!(n > 0);
        io.write_all(&sent[n..]).await.unwrap();
        io.shutdown().await.unwrap();
        let back = tokio::time::timeout(LONG * 4, writer)
            .await
            .unwrap()
            .unwrap();
        assert!(back == sent, "the bytes went back changed");
    }
}
