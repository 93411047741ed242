"""The worker's side of the shared-memory rings (corral's
src/worker/ring.rs describes the layout and the wake-up rules): the same
frames as on the socket, read from the request ring and written to the
response ring, with an eventfd rung only when corral said it sleeps.

`recv_into` stands in for the socket's, and `send_pieces` for a gathering
`sendall`: one thread reads (the worker's reading thread), one writes at a
time (under the connection's write lock). The socket stays open beside the
rings: its end of file says corral is gone.
"""

import mmap
import os
import select
import socket
import struct
import sys
import threading

CONTROL = 4096
ONE = struct.pack("=Q", 1)
PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT

# The control page's fields (see ring.rs), as indices of u64 words: the
# page is read and written through a memoryview cast to native u64s, whose
# items are loaded and stored whole (one aligned 8-byte access each), never
# a byte at a time as struct's "<Q" does (the other side could see half of
# a new index).
REQ_TAIL, REQ_HEAD, REQ_CONSUMER_WAITING, REQ_PRODUCER_WAITING = 8, 16, 24, 32
RESP_TAIL, RESP_HEAD, RESP_CONSUMER_WAITING, RESP_PRODUCER_WAITING = 40, 48, 56, 64


def os_lock():
    """A lock of the OS's, even under gevent's monkey-patching, whose
    locks are greenlet semaphores: no atomic instruction, so no fence."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return monkey.get_original("_thread", "allocate_lock")()
    return threading.Lock()


class Ring:
    def __init__(self, spec, sock):
        """spec: CORRAL_WORKER_RING, "MEM,REQ_DATA,REQ_SPACE,RESP_DATA,RESP_SPACE,SIZE"."""
        mem, self.req_data, self.req_space, self.resp_data, self.resp_space, size = (
            int(x) for x in spec.split(","))
        for fd in (mem, self.req_data, self.req_space, self.resp_data, self.resp_space):
            os.set_inheritable(fd, False)
        self.size = size
        self.mm = mmap.mmap(mem, CONTROL + 2 * size)
        os.close(mem)
        self.mv = memoryview(self.mm)
        self.words = self.mv[:CONTROL].cast("Q")
        self.req_base = CONTROL
        self.resp_base = CONTROL + size
        # Our own indices: the request ring's head, the response ring's tail.
        self.req_head = 0
        self.resp_tail = 0
        # An uncontended lock's acquire and release are atomic
        # read-modify-writes: a full fence on x86-64 (the only machines
        # corral offers the ring to), which Python has no other way to ask for.
        self.fence_lock = os_lock()
        self.rebind(sock)

    def rebind(self, sock):
        """The socket whose end of file says corral is gone, and the polls
        that wait for a bell or for it; made anew after gevent's
        monkey-patching (the app's own, at import), as gevent's polls."""
        self.sock = sock
        self.wait_data = select.poll()
        self.wait_data.register(self.req_data, select.POLLIN)
        self.wait_data.register(sock.fileno(), select.POLLIN)
        self.wait_space = select.poll()
        self.wait_space.register(self.resp_space, select.POLLIN)
        self.wait_space.register(sock.fileno(), select.POLLIN)

    def fence(self):
        lock = self.fence_lock
        lock.acquire()
        lock.release()

    def _sleep(self, poller, bell):
        """Waits for a bell or for corral's end of file (then returns False)."""
        for fd, _ in poller.poll():
            if fd == bell:
                try:
                    os.read(bell, 8)
                except BlockingIOError:
                    pass
            else:
                try:
                    if not self.sock.recv(1, PEEK):
                        return False
                except BlockingIOError:
                    pass
        return True

    def readable(self):
        """Whether the request ring holds bytes: a read that would not wait."""
        return self.words[REQ_TAIL] != self.req_head

    def recv_into(self, view):
        """Moves what the request ring holds (up to len(view)) into view;
        sleeps while it is empty; 0 when corral is gone."""
        w, size = self.words, self.size
        while True:
            tail = w[REQ_TAIL]
            held = tail - self.req_head
            if held:
                n = min(held, len(view))
                at = self.req_head % size
                first = min(n, size - at)
                base = self.req_base
                view[:first] = self.mv[base + at:base + at + first]
                if n > first:
                    view[first:n] = self.mv[base:base + n - first]
                self.req_head += n
                w[REQ_HEAD] = self.req_head
                self.fence()
                if w[REQ_PRODUCER_WAITING]:
                    os.write(self.req_space, ONE)
                return n
            w[REQ_CONSUMER_WAITING] = 1
            self.fence()
            if w[REQ_TAIL] != self.req_head:
                w[REQ_CONSUMER_WAITING] = 0
                continue
            alive = self._sleep(self.wait_data, self.req_data)
            w[REQ_CONSUMER_WAITING] = 0
            if not alive:
                return 0

    def send_pieces(self, pieces):
        """Writes the pieces (bytes-like), in order, into the response
        ring, each copied straight from where it is (no join), waiting for
        room as corral reads; then publishes the new tail once and wakes
        corral if it sleeps."""
        w, size, mv, base = self.words, self.size, self.mv, self.resp_base
        tail = self.resp_tail
        for data in pieces:
            src = memoryview(data)
            pos, total = 0, len(src)
            while pos < total:
                free = size - (tail - w[RESP_HEAD])
                if free <= 0:
                    # Full: what is written so far must be seen before
                    # corral can make room.
                    self._publish(tail)
                    w[RESP_PRODUCER_WAITING] = 1
                    self.fence()
                    if size - (tail - w[RESP_HEAD]) <= 0:
                        alive = self._sleep(self.wait_space, self.resp_space)
                        if not alive:
                            raise BrokenPipeError("corral is gone")
                    w[RESP_PRODUCER_WAITING] = 0
                    continue
                n = min(free, total - pos)
                at = tail % size
                first = min(n, size - at)
                mv[base + at:base + at + first] = src[pos:pos + first]
                if n > first:
                    mv[base:base + n - first] = src[pos + first:pos + n]
                pos += n
                tail += n
        self._publish(tail)

    def _publish(self, tail):
        """Stores the response ring's new tail, then rings corral's bell
        if it said it sleeps (the wake-up rule in ring.rs)."""
        if tail == self.resp_tail:
            return
        self.resp_tail = tail
        w = self.words
        w[RESP_TAIL] = tail
        self.fence()
        if w[RESP_CONSUMER_WAITING]:
            os.write(self.resp_data, ONE)
