"""What the worker's sys.stdout and sys.stderr cost the app: a logging
record at INFO and at WARNING, and a print() of three values, written
through corral's RecordWriter and through the stream Python makes under
PYTHONUNBUFFERED (which corral sets), both into a pipe that `cat` drains.

    bench/app_output.py [ROUNDS]

Prints the median time per call of each, in microseconds, over ROUNDS
(default 5) alternations of 50,000 calls each. Run it with the Python the
app runs on.
"""

import io
import logging
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
N = 50_000


def main():
    if os.environ.get("APP_OUTPUT_CHILD") != "1":
        # The child writes into a pipe, as a worker does; its table comes
        # back on a pipe of its own.
        read, write = os.pipe()
        env = dict(os.environ, APP_OUTPUT_CHILD="1", APP_OUTPUT_FD=str(write),
                   PYTHONUNBUFFERED="1", CORRAL_LOG_MARK="0123456789abcdef",
                   PYTHONPATH=os.path.join(HERE, "..", "src", "worker", "python"))
        drain = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        child = subprocess.Popen([sys.executable, __file__] + sys.argv[1:], env=env,
                                 stdout=drain.stdin, stderr=drain.stdin, pass_fds=(write,))
        os.close(write)
        child.wait()
        drain.stdin.close()
        drain.wait()
        sys.stdout.write(os.read(read, 65536).decode())
        sys.exit(child.returncode)
    from corral_worker.protocol import RecordWriter

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    log = logging.getLogger("bench")
    handler = logging.StreamHandler(sys.stdout)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)

    def logged(f):
        t = time.perf_counter()
        for i in range(N):
            f("request %d done", i)
        return (time.perf_counter() - t) / N * 1e6

    def printed():
        t = time.perf_counter()
        for i in range(N):
            print("request", i, "done")
        return (time.perf_counter() - t) / N * 1e6

    plain = sys.stdout
    ours = io.TextIOWrapper(RecordWriter(1), encoding=plain.encoding, errors=plain.errors,
                            write_through=True)
    cases = (("logging, INFO", lambda: logged(log.info)),
             ("logging, WARNING", lambda: logged(log.warning)),
             ("print()", printed))
    times = {}
    for _ in range(rounds):
        for name, stream in (("Python's", plain), ("corral's", ours)):
            sys.stdout = stream
            handler.setStream(stream)
            for case, run in cases:
                times.setdefault((case, name), []).append(run())
    sys.stdout = plain
    out = ["| call | Python's stream, µs | corral's RecordWriter, µs |", "|---|---:|---:|"]
    for case, _ in cases:
        out.append("| %s | %.2f | %.2f |" % (case, statistics.median(times[(case, "Python's")]),
                                               statistics.median(times[(case, "corral's")])))
    os.write(int(os.environ["APP_OUTPUT_FD"]), ("\n".join(out) + "\n").encode())


if __name__ == "__main__":
    main()
