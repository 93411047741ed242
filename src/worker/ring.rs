//! The shared-memory transport to a WSGI worker: the channel's frames
//! (the same frames as on the socket, [`super::protocol`]) travel through
//! two byte rings in a memory file that corral and the worker both map,
//! and a side wakes the other through an eventfd only when the other said
//! it is about to sleep. A busy worker takes requests, and a busy corral
//! takes responses, without a system call.
//!
//! # Layout
//!
//! One sealed memfd of [`CONTROL`] + 2 × [`RING_BYTES`] bytes: a control
//! page, then the request ring (corral → worker), then the response ring
//! (worker → corral). The control page holds, each on its own cache line,
//! little-endian u64s:
//!
//! | offset | field | written by |
//! |---:|---|---|
//! | 64 / 320 | request / response `tail`: bytes ever written | the producer |
//! | 128 / 384 | request / response `head`: bytes ever read | the consumer |
//! | 192 / 448 | consumer waiting (≠ 0: ring the *data* eventfd) | the consumer |
//! | 256 / 512 | producer waiting (≠ 0: ring the *space* eventfd) | the producer |
//!
//! A ring holds `tail - head` bytes, at `index % RING_BYTES`; a write or a
//! read that reaches the end goes on at the start (a frame may wrap, and a
//! body bigger than the ring goes through in pieces).
//!
//! # Wake-ups
//!
//! Four eventfds: per ring, *data* (the consumer sleeps on it) and *space*
//! (the producer sleeps on it when the ring is full). A side about to sleep
//! stores its waiting flag, then a full fence, then looks at the ring once
//! more, and sleeps only if it is still empty (full); the other side stores
//! its index, then a full fence, then reads the flag, and writes the
//! eventfd only if it is set. One of the two always sees the other's store,
//! so no wake-up is lost; a needless one costs a spurious wake and nothing
//! else. The Python side gets its full fence from an uncontended lock (an
//! atomic read-modify-write, which is a full barrier on x86-64); the ring
//! is offered on x86-64 only for that reason, and other machines keep the
//! socket.
//!
//! # When a side dies or lies
//!
//! The channel's socket stays open beside the ring: it carries nothing once
//! the worker has taken the ring, and its end of file is how each side
//! learns that the other has gone (a worker killed mid-frame: its requests
//! get 502 as on the socket). Everything corral reads from the memory file
//! is checked: an index that puts more than a ring's size between `head`
//! and `tail` closes the channel and the worker is replaced, and the frames
//! themselves go through the same decoder and limits as on the socket. The
//! file is sealed at its size, so a worker cannot shrink it under corral's
//! mapping (which would make corral's next read fault). corral keeps its
//! own copy of the indices it writes, and never trusts the shared one. A
//! worker can corrupt only its own ring: its own requests and responses.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use bytes::{Bytes, BytesMut};
use tokio::io::unix::AsyncFd;

use super::protocol::{Frame, HEADER_LEN, Header, consume, header};

/// Bytes of each ring.
pub const RING_BYTES: usize = 256 * 1024;
/// The control page before the rings.
pub const CONTROL: usize = 4096;
const MAP_BYTES: usize = CONTROL + 2 * RING_BYTES;

const REQ: Offsets = Offsets {
    tail: 64,
    head: 128,
    consumer_waiting: 192,
    producer_waiting: 256,
    data: CONTROL,
};
const RESP: Offsets = Offsets {
    tail: 320,
    head: 384,
    consumer_waiting: 448,
    producer_waiting: 512,
    data: CONTROL + RING_BYTES,
};

/// Where one ring's fields are in the mapping.
#[derive(Clone, Copy)]
struct Offsets {
    tail: usize,
    head: usize,
    consumer_waiting: usize,
    producer_waiting: usize,
    data: usize,
}

/// The worker broke the ring's rules: the channel closes.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error(
        "the worker's request ring index is out of range: corral wrote up to byte {tail}, \
         the worker says it read up to byte {head}"
    )]
    Request { tail: u64, head: u64 },
    #[error(
        "the worker's response ring index is out of range: corral read up to byte {head}, \
         the worker says it wrote up to byte {tail} (a ring holds {RING_BYTES})"
    )]
    Response { head: u64, tail: u64 },
}

/// The file descriptors a worker gets, in the order of
/// `CORRAL_WORKER_RING`: the memory file, then the request ring's data
/// and space eventfds, then the response ring's.
pub struct ChildFds(pub [OwnedFd; 5]);

/// corral's side of one worker's rings.
pub struct Ring {
    map: NonNull<u8>,
    /// corral's own indices: the request ring's tail, the response ring's
    /// head (the shared copies are for the worker to read).
    req_tail: AtomicU64,
    resp_head: AtomicU64,
    req_data: OwnedFd,
    req_space: AsyncFd<OwnedFd>,
    resp_data: AsyncFd<OwnedFd>,
    resp_space: OwnedFd,
}

// SAFETY: the mapping is plain memory shared with another process; every
// access goes through atomics or raw copies, and each of corral's indices
// is written by one task (the writer the request ring's, the reader the
// response ring's).
unsafe impl Send for Ring {}
unsafe impl Sync for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), MAP_BYTES);
        }
    }
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (the other side wakes if it polls it).
fn ring_bell(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write from a live u64. EAGAIN (the counter at its
    // maximum) means the bell is already ringing.
    unsafe {
        libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8);
    }
}

/// Resets an eventfd's count after a wake-up.
fn drain_bell(fd: &OwnedFd) {
    let mut n: u64 = 0;
    // SAFETY: an 8-byte read into a live u64; EAGAIN is fine.
    unsafe {
        libc::read(fd.as_raw_fd(), (&raw mut n).cast(), 8);
    }
}

impl Ring {
    /// A new pair of rings and the fds the worker inherits. Needs a tokio
    /// runtime (corral's waits are registered with it).
    pub fn create() -> std::io::Result<(Ring, ChildFds)> {
        let mem = OwnedFd::from(super::stacks::sealed_memfd(
            c"corral-ring",
            MAP_BYTES as u64,
        )?);
        // SAFETY: a shared mapping of the whole (sealed) file; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                mem.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or(std::io::ErrorKind::Other)?;
        let (req_data, req_space, resp_data, resp_space) =
            (eventfd()?, eventfd()?, eventfd()?, eventfd()?);
        let child = ChildFds([
            mem,
            req_data.try_clone()?,
            req_space.try_clone()?,
            resp_data.try_clone()?,
            resp_space.try_clone()?,
        ]);
        // SAFETY: each OwnedFd moves into its AsyncFd, which keeps it open,
        // and its raw fd the same, until dropped.
        let register = |fd: OwnedFd| unsafe {
            AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                .map_err(std::io::Error::from)
        };
        let ring = Ring {
            map,
            req_tail: AtomicU64::new(0),
            resp_head: AtomicU64::new(0),
            req_data,
            req_space: register(req_space)?,
            resp_data: register(resp_data)?,
            resp_space,
        };
        Ok((ring, child))
    }

    /// The waker's half of the wake-up rule (module docs): stores the new
    /// index (corral's own copy, then the shared word), a full fence, then
    /// rings `bell` if the other side said it waits.
    fn publish(&self, own: &AtomicU64, index: usize, value: u64, waiting: usize, bell: &OwnedFd) {
        own.store(value, Ordering::Relaxed);
        self.word(index).store(value, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.word(waiting).load(Ordering::Relaxed) != 0 {
            ring_bell(bell);
        }
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset < CONTROL);
        // SAFETY: an aligned u64 inside the control page of a live mapping;
        // the other process touches it only as a u64 too.
        unsafe { &*self.map.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `src` into a ring at stream position `pos`, wrapping.
    fn copy_in(&self, ring: Offsets, pos: u64, src: &[u8]) {
        let at = (pos % RING_BYTES as u64) as usize;
        let first = src.len().min(RING_BYTES - at);
        // SAFETY: both ranges lie inside the ring's data (at + first <=
        // RING_BYTES, the rest starts at 0 and is shorter than the ring).
        unsafe {
            let base = self.map.as_ptr().add(ring.data);
            std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), base, src.len() - first);
        }
    }

    /// Copies `n` bytes out of a ring from stream position `pos` to the end
    /// of `buf` (which has room for them), wrapping.
    fn copy_out(&self, ring: Offsets, pos: u64, n: usize, buf: &mut BytesMut) {
        let spare = buf.spare_capacity_mut();
        assert!(spare.len() >= n && n <= RING_BYTES);
        // SAFETY: `spare` has room for `n` bytes, which the copy then
        // initializes.
        unsafe {
            self.read_raw(ring, pos, spare.as_mut_ptr().cast::<u8>(), n);
            buf.set_len(buf.len() + n);
        }
    }

    /// Fills `dst` from a ring at stream position `pos`, wrapping.
    fn peek(&self, ring: Offsets, pos: u64, dst: &mut [u8]) {
        assert!(dst.len() <= RING_BYTES);
        // SAFETY: `dst` has room for its length.
        unsafe { self.read_raw(ring, pos, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `n` bytes (at most a ring) out of a ring from stream position
    /// `pos` to `dst`, wrapping.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for `n` bytes of writes.
    unsafe fn read_raw(&self, ring: Offsets, pos: u64, dst: *mut u8, n: usize) {
        let at = (pos % RING_BYTES as u64) as usize;
        let first = n.min(RING_BYTES - at);
        // SAFETY: the source ranges lie inside the ring's data (n is at most
        // a ring), the destination is the caller's. The worker may scribble
        // on the source meanwhile: it then gets its own garbage back as
        // frames, which are checked.
        unsafe {
            let base = self.map.as_ptr().add(ring.data);
            std::ptr::copy_nonoverlapping(base.add(at), dst, first);
            std::ptr::copy_nonoverlapping(base, dst.add(first), n - first);
        }
    }

    /// Bytes the worker has not read yet out of the request ring; an error
    /// when its `head` is not within a ring of corral's tail.
    fn requests_held(&self) -> Result<u64, RingError> {
        let tail = self.req_tail.load(Ordering::Relaxed);
        let head = self.word(REQ.head).load(Ordering::Acquire);
        let held = tail.wrapping_sub(head);
        if held > RING_BYTES as u64 {
            return Err(RingError::Request { tail, head });
        }
        Ok(held)
    }

    /// Bytes of responses waiting in the response ring; an error when the
    /// worker's `tail` is not within a ring of corral's head.
    fn responses_held(&self) -> Result<u64, RingError> {
        let head = self.resp_head.load(Ordering::Relaxed);
        let tail = self.word(RESP.tail).load(Ordering::Acquire);
        let held = tail.wrapping_sub(head);
        if held > RING_BYTES as u64 {
            return Err(RingError::Response { head, tail });
        }
        Ok(held)
    }

    /// Copies as much of `pieces` as the request ring has room for, in
    /// order, and wakes the worker if it sleeps; the bytes taken.
    pub fn push(&self, pieces: &[Bytes]) -> Result<usize, RingError> {
        let mut free = RING_BYTES - self.requests_held()? as usize;
        let tail = self.req_tail.load(Ordering::Relaxed);
        let mut taken = 0usize;
        for piece in pieces {
            if free == 0 {
                break;
            }
            let n = piece.len().min(free);
            self.copy_in(REQ, tail.wrapping_add(taken as u64), &piece[..n]);
            taken += n;
            free -= n;
        }
        if taken > 0 {
            let tail = tail.wrapping_add(taken as u64);
            self.publish(
                &self.req_tail,
                REQ.tail,
                tail,
                REQ.consumer_waiting,
                &self.req_data,
            );
        }
        Ok(taken)
    }

    /// Writes every piece of `batch` in order into the request ring,
    /// waiting for room as the worker reads, then empties `batch`.
    pub async fn write_all(&self, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
        let mut first = consume(batch, 0, 0);
        while first < batch.len() {
            let n = self.push(&batch[first..]).map_err(std::io::Error::other)?;
            if n == 0 {
                self.wait_for_room().await?;
            }
            first = consume(batch, first, n);
        }
        batch.clear();
        Ok(())
    }

    /// Sleeps until the worker has read from a full request ring.
    async fn wait_for_room(&self) -> std::io::Result<()> {
        let waiting = self.word(REQ.producer_waiting);
        waiting.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.requests_held().map_err(std::io::Error::other)? < RING_BYTES as u64 {
            waiting.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let mut guard = self.req_space.readable().await?;
        drain_bell(guard.get_inner());
        guard.clear_ready();
        waiting.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Moves what the response ring holds (as much as `buf` has room for)
    /// to the end of `buf`, and wakes the worker if it waits for room; the
    /// bytes moved.
    pub fn pull(&self, buf: &mut BytesMut) -> Result<usize, RingError> {
        let held = self.responses_held()? as usize;
        let n = held.min(buf.capacity() - buf.len());
        if n == 0 {
            return Ok(0);
        }
        let head = self.resp_head.load(Ordering::Relaxed);
        self.copy_out(RESP, head, n, buf);
        self.taken(head.wrapping_add(n as u64));
        Ok(n)
    }

    /// Takes the whole frames at the front of the response ring whose
    /// payloads are at most `max` bytes, in order, and
    /// hands each to `each` until it answers `false`. A payload is copied
    /// once, straight into a buffer of its own size, where [`Ring::pull`]
    /// and `protocol::decode` would copy it twice. Stops at a frame not
    /// whole yet, a bigger one or a header `decode` refuses: those are left
    /// for `pull`. Wakes the worker once if it waits for room.
    pub fn take_frames(
        &self,
        max: usize,
        mut each: impl FnMut(Frame) -> bool,
    ) -> Result<(), RingError> {
        let held = self.responses_held()? as usize;
        let head = self.resp_head.load(Ordering::Relaxed);
        let mut taken = 0usize;
        while held - taken >= HEADER_LEN {
            let mut bytes = [0u8; HEADER_LEN];
            self.peek(RESP, head.wrapping_add(taken as u64), &mut bytes);
            let Ok(Header { len, kind, stream }) = header(&bytes) else {
                break;
            };
            if len > max || held - taken < HEADER_LEN + len {
                break;
            }
            let mut payload = BytesMut::with_capacity(len);
            let at = head.wrapping_add((taken + HEADER_LEN) as u64);
            self.copy_out(RESP, at, len, &mut payload);
            taken += HEADER_LEN + len;
            let payload = payload.freeze();
            if !each(Frame {
                kind,
                stream,
                payload,
            }) {
                break;
            }
        }
        if taken > 0 {
            self.taken(head.wrapping_add(taken as u64));
        }
        Ok(())
    }

    /// Publishes how far corral has read the response ring (`head`), and
    /// wakes the worker if it waits for room.
    fn taken(&self, head: u64) {
        self.publish(
            &self.resp_head,
            RESP.head,
            head,
            RESP.producer_waiting,
            &self.resp_space,
        );
    }

    /// Returns once the response ring has bytes (or an eventfd error).
    /// Cancel-safe: dropped mid-wait, it leaves at worst a needless
    /// wake-up behind.
    pub async fn responses(&self) -> std::io::Result<()> {
        let waiting = self.word(RESP.consumer_waiting);
        loop {
            waiting.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.responses_held().map_err(std::io::Error::other)? > 0 {
                waiting.store(0, Ordering::Relaxed);
                return Ok(());
            }
            let mut guard = self.resp_data.readable().await?;
            drain_bell(guard.get_inner());
            guard.clear_ready();
        }
    }
}

impl ChildFds {
    /// Copies numbered at least `min`, close-on-exec, for the fork.
    pub fn dup_above(&self, min: i32) -> std::io::Result<[OwnedFd; 5]> {
        let [a, b, c, d, e] = &self.0;
        let dup = |fd: &OwnedFd| super::process::dup_above(fd.as_fd(), min);
        Ok([dup(a)?, dup(b)?, dup(c)?, dup(d)?, dup(e)?])
    }
}

/// Whether this machine gets the ring (see the module docs: the Python
/// side's fence is sound on x86-64).
pub const SUPPORTED: bool = cfg!(target_arch = "x86_64");

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u8) -> Bytes {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    /// Plays the worker: reads the request ring and writes what it read
    /// into the response ring, through the shared indices only.
    fn worker_echo(ring: &Ring, max: usize) -> usize {
        let head = ring.word(REQ.head).load(Ordering::Acquire);
        let tail = ring.word(REQ.tail).load(Ordering::Acquire);
        let n = ((tail - head) as usize).min(max);
        let mut tmp = BytesMut::with_capacity(n);
        ring.copy_out(REQ, head, n, &mut tmp);
        ring.word(REQ.head)
            .store(head + n as u64, Ordering::Release);
        let rtail = ring.word(RESP.tail).load(Ordering::Acquire);
        ring.copy_in(RESP, rtail, &tmp);
        ring.word(RESP.tail)
            .store(rtail + n as u64, Ordering::Release);
        n
    }

    #[tokio::test]
    async fn bytes_wrap_around_and_a_body_bigger_than_the_ring_goes_through() {
        let (ring, _child) = Ring::create().unwrap();
        // 3.5 rings' worth in odd-sized pieces, so that pieces straddle the end.
        let pieces: Vec<Bytes> = (0..70).map(|i| bytes(13_107, i as u8)).collect();
        let want: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        let mut queue = pieces.clone();
        let mut got = BytesMut::with_capacity(want.len());
        let mut first = 0;
        while got.len() < want.len() {
            let n = ring.push(&queue[first..]).unwrap();
            first = consume(&mut queue, first, n);
            worker_echo(&ring, 100_000);
            ring.pull(&mut got).unwrap();
        }
        assert_eq!(&got[..], &want[..]);
    }

    /// Plays the worker: writes `bytes` into the response ring.
    fn worker_send(ring: &Ring, bytes: &[u8]) {
        let tail = ring.word(RESP.tail).load(Ordering::Acquire);
        ring.copy_in(RESP, tail, bytes);
        ring.word(RESP.tail)
            .store(tail + bytes.len() as u64, Ordering::Release);
    }

    fn data(stream: u32, n: usize) -> Bytes {
        super::super::protocol::encode(
            super::super::protocol::FrameKind::Data,
            stream,
            &bytes(n, stream as u8),
        )
    }

    #[tokio::test]
    async fn whole_small_frames_are_taken_at_once_and_the_rest_left_for_pull() {
        let (ring, _child) = Ring::create().unwrap();
        // Start near the ring's end, so that the first frame wraps.
        worker_send(&ring, &vec![0u8; RING_BYTES - 20]);
        let mut sink = BytesMut::with_capacity(RING_BYTES);
        ring.pull(&mut sink).unwrap();
        // Three whole small frames, one bigger than `max`, one cut short.
        for (stream, n) in [(1, 100), (2, 200), (3, 300), (4, 5000)] {
            worker_send(&ring, &data(stream, n));
        }
        let cut = data(5, 300);
        worker_send(&ring, &cut[..50]);
        let mut got = Vec::new();
        // `each` stops it after the first.
        ring.take_frames(1000, |f| {
            got.push((f.stream, f.payload));
            false
        })
        .unwrap();
        ring.take_frames(1000, |f| {
            got.push((f.stream, f.payload));
            true
        })
        .unwrap();
        let want: Vec<_> = [(1, 100), (2, 200), (3, 300)]
            .map(|(s, n)| (s, bytes(n, s as u8)))
            .into();
        assert_eq!(got, want);
        // The rest, from the big frame on, is left whole for pull.
        let mut rest = BytesMut::with_capacity(RING_BYTES);
        ring.pull(&mut rest).unwrap();
        assert_eq!(&rest[..], &[&data(4, 5000)[..], &cut[..50]].concat()[..]);
    }

    #[tokio::test]
    async fn a_frame_header_over_the_limit_is_left_for_pull_to_refuse() {
        let (ring, _child) = Ring::create().unwrap();
        let mut forged = data(1, 10).to_vec();
        forged[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        worker_send(&ring, &forged);
        let mut got = 0;
        ring.take_frames(1000, |_| {
            got += 1;
            true
        })
        .unwrap();
        assert_eq!(got, 0);
        let mut rest = BytesMut::with_capacity(1024);
        ring.pull(&mut rest).unwrap();
        assert_eq!(&rest[..], &forged[..]);
        assert!(super::super::protocol::decode(&mut rest).is_err());
    }

    #[tokio::test]
    async fn a_full_ring_takes_nothing_more_until_the_worker_reads() {
        let (ring, _child) = Ring::create().unwrap();
        let big = bytes(RING_BYTES + 10, 1);
        assert_eq!(ring.push(std::slice::from_ref(&big)).unwrap(), RING_BYTES);
        assert_eq!(ring.push(&[bytes(1, 2)]).unwrap(), 0);
        worker_echo(&ring, 100);
        assert_eq!(ring.push(&[bytes(500, 3)]).unwrap(), 100);
    }

    #[tokio::test]
    async fn indices_a_worker_forged_are_refused() {
        let (ring, _child) = Ring::create().unwrap();
        // A response tail more than a ring ahead of corral's head.
        ring.word(RESP.tail)
            .store(RING_BYTES as u64 + 1, Ordering::Release);
        let mut buf = BytesMut::with_capacity(1024);
        let err = ring.pull(&mut buf).unwrap_err();
        assert!(err.to_string().contains("response ring index"), "{err}");
        assert!(buf.is_empty());
        // A request head ahead of corral's tail.
        ring.word(REQ.head).store(5, Ordering::Release);
        let err = ring.push(&[bytes(10, 0)]).unwrap_err();
        assert!(err.to_string().contains("request ring index"), "{err}");
    }

    #[tokio::test]
    async fn the_worker_cannot_resize_the_memory_file() {
        let (_ring, child) = Ring::create().unwrap();
        let shrink = nix::unistd::ftruncate(&child.0[0], 0);
        assert!(shrink.is_err(), "a sealed file cannot shrink");
    }

    #[tokio::test]
    async fn a_sleeping_corral_is_woken_by_the_worker_bell() {
        let (ring, child) = Ring::create().unwrap();
        let ring = std::sync::Arc::new(ring);
        let r = ring.clone();
        let waiter = tokio::spawn(async move { r.responses().await });
        // Wait until corral says it sleeps, then write and ring as the
        // worker does.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ring.word(RESP.consumer_waiting).load(Ordering::Acquire) == 0 {
            assert!(std::time::Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        ring.copy_in(RESP, 0, b"hi");
        ring.word(RESP.tail).store(2, Ordering::Release);
        ring_bell(&child.0[3]);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
        let mut buf = BytesMut::with_capacity(16);
        assert_eq!(ring.pull(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..], b"hi");
    }
}
