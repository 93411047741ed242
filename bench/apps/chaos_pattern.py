"""The bytes of a /big answer in bench/chaos.py's apps, shared with the
client so it can check every byte it was sent."""

import hashlib
import struct

PIECE = 65536
_BLOCK = b"".join(hashlib.sha256(b"corral chaos %d" % i).digest() for i in range(PIECE // 32))


def body_pieces(size):
    """A body of `size` bytes in pieces of at most 64 KiB; each piece starts
    with its own index, so a lost, repeated or reordered piece shows."""
    k = 0
    while size > 0:
        n = min(size, PIECE)
        yield (struct.pack("!Q", k) + _BLOCK[8:])[:n]
        size -= n
        k += 1


def body_sha256(size):
    digest = hashlib.sha256()
    for piece in body_pieces(size):
        digest.update(piece)
    return digest.hexdigest()
