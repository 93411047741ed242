"""What the consumers saw, for GET /events/ (one worker process), and on
stderr, for after the server stopped."""

import sys

EVENTS = []


def record(event):
    EVENTS.append(event)
    sys.stderr.write("chanapp: %s\n" % event)
    sys.stderr.flush()
