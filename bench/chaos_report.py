"""What bench/chaos.py saw, judged: every failure held against the faults the
run made (and corral's log), the supervisor's RSS slope, the end state, the
pass criteria; then the printed report and the files of the run."""

import argparse
import datetime
import json
import os
import re

import chaos_load as load

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+(\w+)\s+(.*)$")
DEATH = re.compile(r"\(pid (\d+)\) (?:exited with code (-?\d+)|was killed by (SIG\w+))")
REPLACED = re.compile(r"\(pid (\d+)\): (.*?); dumping its Python stacks and replacing it")
RECYCLED = re.compile(r"\(pid (\d+)\) (.*?): recycling it")
# After the graceful stop began, corral should start no worker.
STARTED = re.compile(r"booted in|starting its replacement|next start in")


def parse_log(path):
    """[(epoch seconds, level, message)] of corral's own lines."""
    out = []
    try:
        f = open(path, errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            m = LOG_LINE.match(line.rstrip("\n"))
            if not m:
                continue
            stamp, _, frac = m.group(1).partition(".")
            t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(
                tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
            out.append((t, m.group(2), m.group(3)))
    return out


def seen_pids(seen_dir, wanted):
    """{request id: pid of the worker whose app started it} for the ids wanted."""
    out = {}
    try:
        names = os.listdir(seen_dir)
    except OSError:
        return out
    for name in names:
        m = re.match(r"seen-(\d+)\.txt$", name)
        if not m:
            continue
        with open(os.path.join(seen_dir, name), errors="replace") as f:
            for line in f:
                rid = line.strip()
                if rid in wanted:
                    out[rid] = int(m.group(1))
    return out


class Victims:
    """The workers the run killed or stopped, with when they died (from
    corral's log, else from /proc)."""

    def __init__(self, faults, stopped, log, end):
        self.killed = {e["pid"]: e["t"] for e in faults if e["kind"] == "kill"}
        self.stopped = stopped
        self.deaths, self.replaced, self.recycled, self.exit_lines = {}, {}, {}, {}
        for t, _lvl, msg in log:
            m = DEATH.search(msg)
            if m and int(m.group(1)) not in self.deaths:
                self.deaths[int(m.group(1))] = (t, m.group(3) or f"code {m.group(2)}")
                self.exit_lines[int(m.group(1))] = msg
            m = REPLACED.search(msg)
            if m:
                self.replaced.setdefault(int(m.group(1)), (t, m.group(2)))
            m = RECYCLED.search(msg)
            if m:
                self.recycled.setdefault(int(m.group(1)), (t, m.group(2)))
        self.end = end
        self.pids = set(self.killed) | set(self.stopped)

    def death(self, pid):
        """When a worker the run touched died of it, else None (a stopped
        worker that was resumed and died later died of something else)."""
        if pid in self.killed:
            return self.deaths.get(pid, (self.killed[pid],))[0]
        s = self.stopped.get(pid)
        if not s:
            return None
        d = self.deaths[pid][0] if pid in self.deaths else s.get("gone")
        if d is not None and s["cont"] is not None and d > s["cont"] + 1:
            return None
        return d

    def stop_span(self, pid):
        s = self.stopped[pid]
        return s["t"], s["cont"] or self.death(pid) or self.end

    def why(self, pid):
        if pid in self.killed:
            return "SIGKILL by chaos"
        if self.death(pid):
            return "SIGSTOP by chaos, then killed by corral"
        return "SIGSTOP by chaos"

    def hit_span(self, pid, recovery):
        """From the fault until its worker was replaced or resumed, plus
        `recovery` for a replacement to boot."""
        if pid in self.killed:
            return self.killed[pid], self.killed[pid] + recovery
        start, end = self.stop_span(pid)
        return start, end + recovery

    def other_deaths(self, lo, hi):
        """Workers that died abnormally in [lo, hi] that the run did not touch."""
        return [(pid, how) for pid, (t, how) in self.deaths.items()
                if lo <= t <= hi and self.death(pid) is None and how != "code 0"]


def fd_kinds(table):
    kinds = {}
    for target in table.values():
        kind = re.sub(r"\[\d+\]$", "", target) if ":" in target else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def overlap(a0, a1, b0, b1):
    return a0 <= b1 and b0 <= a1


def attribute(f, v, faults, a):
    """(reason, how, pid) for a failure the run's faults explain, else None.
    how: "pid" when the worker it reached is known (the app logged its id, or
    answered the head), "time" when only the times fit."""
    cls, t0, t1 = f["cls"], f["t0"], f["t1"]
    pid = f.get("pid") or f.get("seen_pid")
    w = a.kill_window
    if cls == load.C502:
        # corral answers 502 when the worker's channel breaks: as the worker
        # dies (the request was on it), or up to kill_window later (sent to
        # the dead worker before corral saw it die). A client still sending
        # its body reads the answer only once it has sent it all.
        sent = f.get("t_sent", t0 + f.get("sent_s", 0))
        for p in [pid] if pid else v.pids:
            d = v.death(p) if p in v.pids else None
            if d is None or d > t1 + 0.5:
                continue
            if d >= t1 - w or (t1 - sent <= w and d >= t0 - w):
                return v.why(p), "pid" if pid else "time", p
        return None
    if cls in (load.WS_1011, load.CUT):
        # The client sees the cut as its worker dies, or (a slow reader)
        # once it has read what the socket buffers still held.
        for p in [pid] if pid else v.pids:
            d = v.death(p) if p in v.pids else None
            if d is not None and t0 - 1 <= d <= t1 + 1:
                return v.why(p), "pid" if pid else "time", p
            if pid and cls == load.CUT and p in v.stopped and overlap(*v.stop_span(p), t0, t1):
                return v.why(p), "pid", p
        return None
    if cls in (load.C504, load.WS_STALL):
        # A 504 comes `timeout` after dispatch: its worker was stopped
        # through the wait.
        lo = t1 - (a.timeout if cls == load.C504 else a.heartbeat_timeout + a.timeout + 10)
        for p in [pid] if pid else list(v.stopped):
            if p in v.stopped:
                s0, s1 = v.stop_span(p)
                if pid and overlap(s0, s1, t0, t1):
                    return "SIGSTOP by chaos", "pid", p
                if s0 <= t1 - 0.5 and s1 >= lo:
                    return "SIGSTOP by chaos", "pid" if pid else "time", p
        return None
    if cls == load.RESENT:
        # Sent again on a new connection: right only when the old corral
        # of a re-exec closed it while draining, before the app started it.
        if f.get("seen_pid"):
            return None
        for e in faults:
            if e["kind"] == "reexec" and e.get("new") and (
                    e["t"] - 1 <= t1 <= (e.get("old_exit") or e["t"] + 120) + 1):
                return "USR2 re-exec: the old corral drained (never started)", "time", None
        return None
    if cls == load.C503:
        for p in v.pids:
            if overlap(*v.hit_span(p, 5 + a.timeout), t0 - w, t1):
                return v.why(p) + " (capacity)", "time", p
        return None
    if cls == load.WS_1001:
        # A drain (recycling, a reload, scaling down) closes the WebSockets
        # of a worker with 1001 as it starts to stop; it exits soon after.
        why = "drain (recycle, reload or scale down)"
        if pid:
            d = v.deaths.get(pid)
            if d and t1 - 1 <= d[0] <= t1 + a.graceful_timeout + 5:
                return why, "pid", pid
            return None
        drains = ("reload", "SIGHUP", "scale", "SIGTTOU", "cert", "reexec")
        if any(e["kind"] in drains and t1 - 5 <= e["t"] <= t1 + 1 for e in faults):
            return why, "time", None
        return None
    return None


def slope(points):
    """Least-squares slope of [(x, y)]."""
    n = len(points)
    if n < 3:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else None


def load_raw(path):
    """The raw record of a run (raw.json), as analyse() takes it."""
    with open(path) as f:
        raw = json.load(f)
    raw["stopped"] = {int(p): s for p, s in raw["stopped"].items()}
    return raw


def analyse(raw):
    """Judges a run from its raw record (see chaos.py: raw.json)."""
    a, run = argparse.Namespace(**raw["args"]), raw["run"]
    log = parse_log(raw["log_path"])
    t0 = run.get("t0") or (log[0][0] if log else 0)
    end = run.get("t_term") or (log[-1][0] if log else t0)
    failures = [dict(f) for f in raw["failures"]]
    seen = seen_pids(raw["seen_dir"], {f["id"] for f in failures})
    for f in failures:
        if f["id"] in seen:
            f["seen_pid"] = seen[f["id"]]
    v = Victims(raw["faults"], raw["stopped"], log, end)
    accounted, unaccounted, ambiguous = {}, [], []
    for f in failures:
        got = attribute(f, v, raw["faults"], a)
        if got:
            f["reason"], f["by"], f["fault_pid"] = got
            accounted[(f["cls"], got[0])] = accounted.get((f["cls"], got[0]), 0) + 1
            others = v.other_deaths(f["t1"] - a.kill_window, f["t1"] + 1)
            if got[1] == "time" and others:
                f["ambiguous"] = others
                ambiguous.append(f)
        else:
            f["evidence"] = evidence(f, log)
            unaccounted.append(f)
    counts = {(k, c): n for k, c, n in raw["counts"]}
    res = dict(a=a, run=run, t0=t0, counts=counts, ws_messages=raw["ws_messages"],
               late_echoes=raw["late_echoes"], goaways=raw.get("goaways", 0),
               h2_resent=raw.get("h2_resent", 0), failures=failures, accounted=accounted,
               unaccounted=unaccounted, ambiguous=ambiguous, faults=raw["faults"],
               problems=raw["problems"], samples=raw["samples"])
    res.update(rss_figures(a, res["samples"]))
    res["rss_jumps"] = rss_jumps(res["samples"], raw.get("trace", []), t0)
    res["recycles"] = len(v.recycled)
    res["corral_replaced"] = {p: r for p, r in v.replaced.items() if p not in v.pids}
    res["stop_starts"] = [f"{t - t0:.2f}s {lvl} {msg}" for t, lvl, msg in log
                          if run.get("t_term") and t >= run["t_term"] and STARTED.search(msg)]
    # A worker SIGKILLed that neither the run nor a logged reason of corral's
    # (timeout, heartbeat, boot timeout) explains, outside a drain: the OOM
    # killer, or a signal sent to a pid that was no longer the worker's.
    res["unexplained_kills"] = [
        f"{t - t0:.2f}s {v.exit_lines[p]}" for p, (t, how) in v.deaths.items()
        if how == "SIGKILL" and p not in v.pids and p not in v.replaced
        and not re.search(r"no longer served|scaled down", v.exit_lines[p])
        and not (run.get("t_term") and t >= run["t_term"])]
    res["criteria"] = criteria(a, res)
    res["passed"] = all(ok for _n, ok, _v in res["criteria"])
    return res


def evidence(f, log):
    """corral's log lines that may explain an unaccounted failure: warnings
    and errors around it, and lines about the worker it reached."""
    pids = {p for p in (f.get("pid"), f.get("seen_pid")) if p}
    out = []
    for t, lvl, msg in log:
        near = f["t0"] - 1 <= t <= f["t1"] + 1
        about = f["t0"] - 5 <= t <= f["t1"] + 5 and any(f"(pid {p})" in msg for p in pids)
        if (near and lvl in ("WARN", "ERROR")) or about:
            out.append((t, lvl, msg))
    return out[:8]


def rss_figures(a, samples):
    # After a USR2 re-exec the slope is the last corral's, from its own
    # warm-up on (samples carry the pid since re-execs were added).
    last_pid = samples[-1][5] if samples and len(samples[-1]) > 5 else None
    since = a.warmup
    if last_pid is not None and any(s[5] != last_pid for s in samples):
        since = min(s[0] for s in samples if s[5] == last_pid) + a.warmup
    late = [(s[0] / 60, s[1] / 1024) for s in samples
            if since <= s[0] <= a.duration and (last_pid is None or s[5] == last_pid)]
    minima = {}
    for t, rss in late:  # the floor of each 30 s window: what stays when buffers are freed
        minima[int(t * 2)] = min(minima.get(int(t * 2), rss), rss)
    return dict(rss_slope=slope(late), rss_points=len(late), rss_since=since,
                rss_floor_slope=slope([(k / 2, m) for k, m in minima.items()]),
                rss_start=samples[0][1] / 1024 if samples else None,
                rss_max=max(s[1] for s in samples) / 1024 if samples else None,
                rss_end=samples[-1][1] / 1024 if samples else None)


def rss_jumps(samples, trace, t0, mib=2.0):
    """Each rise of corral's RSS by more than `mib` between two samples, with
    the large requests (uploads, slow reads) in flight across it."""
    out = []
    for prev, cur in zip(samples, samples[1:]):
        rise = (cur[1] - prev[1]) / 1024
        if rise > mib:
            lo, hi = t0 + prev[0], t0 + cur[0]
            busy = [req for _k, s, e, req, _c in trace if s <= hi and e >= lo]
            out.append((prev[0], cur[0], rise, cur[1] / 1024, busy))
    return out


def criteria(a, r):
    counts = r["counts"]
    total = lambda cls: sum(n for (_k, c), n in counts.items() if c == cls)  # noqa: E731
    run = r["run"]
    out = [("corral kept running", not run.get("corral_died"), run.get("corral_died") or "yes"),
           ("no connection refused", total(load.REFUSED) == 0, str(total(load.REFUSED)))]
    lost = total(load.RESET) + total(load.TIMEOUT) + total(load.WS_RESET)
    out.append(("no request lost without an answer", lost == 0,
                f"{total(load.RESET)} reset, {total(load.TIMEOUT)} timed out, "
                f"{total(load.WS_RESET)} WebSockets cut without a close frame"))
    out.append(("every failure accounted for by a fault", not r["unaccounted"],
                f"{len(r['unaccounted'])} unaccounted"))
    sl = r["rss_slope"]
    out.append((f"supervisor RSS flat (< {a.rss_slope_max:g} MiB/min after "
                f"{r['rss_since']:.0f}s)",
                sl is not None and sl < a.rss_slope_max,
                "too few samples" if sl is None else f"{sl:+.3f} MiB/min"))
    st, start = run.get("settle"), run.get("start") or {}
    if st is None:
        out.append(("no worker leaked", False, "not measured (corral gone)"))
        out.append(("no fd leaked", False, "not measured (corral gone)"))
        return out
    w_ok = st["status_ok"] and len(st["workers"]) == a.workers and not st["zombies"]
    out.append(("no worker leaked", w_ok,
                f"{len(st['workers'])} live workers (configured {a.workers}), "
                f"slots {'all in service' if st['status_ok'] else st['slots']}, "
                f"{len(st['zombies'])} zombies"))
    n0, n1 = len(start.get("fds", {})), len(st["fds"])
    out.append(("no fd leaked", n1 <= n0 + a.fd_slack,
                f"{n0} at the start, {n1} at the end (slack {a.fd_slack})"))
    stop = run.get("stop")
    if stop:
        left = run.get("killed_at_cleanup") or []
        ok = stop["code"] == 0 and not stop["started"] and not left
        out.append(("graceful stop: exit 0, no worker started, none left", ok,
                    f"exit {stop['code']} after {stop['seconds']}s, "
                    f"{len(stop['started'])} workers started after SIGTERM, "
                    f"{len(left)} processes left"))
    return out


# ---------------------------------------------------------------- output

def rel(r, t):
    return f"{t - r['t0']:7.2f}s"


def outcome_table(r):
    counts = r["counts"]
    kinds = list(dict.fromkeys(k for k, _c in sorted(counts, key=lambda kc: KIND_ORDER.get(
        kc[0], 9))))
    classes = [c for c in load.CLASSES if any(cc == c for _k, cc in counts)]
    head = ["client", "outcomes"] + classes
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for k in kinds + ["all"]:
        row = {c: sum(n for (kk, cc), n in counts.items() if cc == c and (k == "all" or kk == k))
               for c in classes}
        cells = [f"**{k}**" if k == "all" else k, str(sum(row.values()))]
        cells += [str(row[c]) if row[c] else "" for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


KIND_ORDER = {"keep-alive": 0, "new conn": 1, "upload": 2, "upload, slow": 3, "slow reader": 4,
              "websocket": 5, "h2": 6, "h2 upload": 7, "h2 slow reader": 8,
              "during stop": 9}


def describe(r, f):
    bits = [f"{rel(r, f['t0'])} +{f['t1'] - f['t0']:.2f}s {f['kind']} {f.get('req', '')} "
            f"id {f['id']}: {f['cls']}"]
    if f.get("body"):
        bits.append(f"\"{f['body'][:70]}\"")
    for key, label in (("seen_pid", "reached worker pid"), ("pid", "worker pid"),
                       ("code", "close code"), ("sent_s", "sending took"), ("head_s", "head after"),
                       ("error", "error"), ("send_error", "send error"), ("size", "body bytes"),
                       ("messages", "messages"), ("reused", "reused connection"),
                       ("retried", "sent again after GOAWAY"), ("goaway", "GOAWAY seen")):
        if f.get(key) not in (None, False, ""):
            bits.append(f"{label} {f[key]}")
    return "; ".join(bits)


def render(r):
    run, a = r["run"], r["a"]
    when = datetime.datetime.fromtimestamp(r["t0"]).astimezone().isoformat(timespec="seconds")
    app = ("asgi_chaos (ASGI)" if a.asgi
           else "chaos_app (WSGI, gevent workers)" if getattr(a, "gevent", False)
           else f"chaos_app (WSGI, {a.threads} threads)")
    out = [f"# corral chaos run, {when}", "",
           f"corral: {run['corral_version']} (git {run['rev']}); machine: {run['cpus']} CPUs",
           f"app: {app}, {a.workers} workers (scaled {a.min_workers}-{a.max_workers}), timeout "
           f"{a.timeout:g}s, heartbeat_timeout {a.heartbeat_timeout:g}s, graceful_timeout "
           f"{a.graceful_timeout:g}s, max_requests {a.max_requests} (+{a.max_requests_jitter})",
           f"run: {a.duration:g}s of load, seed {a.seed}, faults {','.join(a.faults) or 'none'}"
           f" every {a.fault_every}s (none in the last {a.quiet:g}s); clients: {a.keepalive} "
           f"keep-alive, {a.newconn} new-conn, {a.uploads} upload, {a.slow_readers} "
           f"slow-reader, {a.websockets} WebSocket, {getattr(a, 'h2', 0)} HTTP/2"
           f" and {getattr(a, 'h2_slow_readers', 0) or 0} HTTP/2 slow-reader"
           f"{' (ALPN h2)' if getattr(a, 'h2', 0) and getattr(a, 'tls', False) else ''}"
           f"{' (h2c)' if getattr(a, 'h2', 0) and not getattr(a, 'tls', False) else ''}; "
           f"slow uploads and reads up to {a.slow_max:g}s"
           f"{'; every connection over TLS' if getattr(a, 'tls', False) else ''}",
           f"command: {run['command']}",
           "machine CPU during the load: " + (
               f"corral and its workers {run['cpu']['corral']}%, this script "
               f"{run['cpu']['chaos']}%, other tenants {run['cpu']['other']}%"
               if run.get("cpu") else "not measured"),
           f"corral log: {run['log']}"]
    if run.get("interrupted"):
        out.append(f"\n**interrupted ({run['interrupted']}): partial figures**")
    kinds = {}
    for e in r["faults"]:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    out += ["", "## Faults", "",
            "made: " + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "none")
            + f"; recycled by corral (max_requests, from its log): {r['recycles']}"]
    if r["corral_replaced"]:
        out.append("")
        out.append("workers corral replaced on its own (timeout or heartbeat) that the run had "
                   "not touched:")
        out += [f"- {rel(r, t)} pid {p}: {why}" for p, (t, why) in r["corral_replaced"].items()]
    out += ["", "## Outcomes", "", outcome_table(r), ""]
    if a.websockets:
        out.append(f"WebSocket messages echoed: {r['ws_messages']} ({r['late_echoes']} of them "
                   f"more than {a.timeout:g}s late).")
    if getattr(a, "h2", 0):
        out.append(f"HTTP/2 connections that got a GOAWAY (an old corral draining after a re-exec): {r['goaways']}; "
                   f"requests above its last stream id, sent again on a new connection: "
                   f"{r['h2_resent']}.")
    failures = r["failures"]
    out += [f"failures (every outcome but 2xx and ws ok): {len(failures)}; accounted for by a "
            f"fault: {sum(r['accounted'].values())}; unaccounted: {len(r['unaccounted'])}", ""]
    if r["accounted"]:
        out.append("| outcome | explained by | n |")
        out.append("|---|---|---:|")
        for (cls, why), n in sorted(r["accounted"].items(), key=lambda x: -x[1]):
            out.append(f"| {cls} | {why} | {n} |")
        by_time = sum(1 for f in failures if f.get("by") == "time")
        out.append(f"\n{by_time} of them by time only (the worker they were on is unknown: "
                   f"the app had not started them); {len(r['ambiguous'])} of those with a "
                   "worker death the run did not cause in the same window:")
        for f in r["ambiguous"][:10]:
            out.append(f"- {describe(r, f)}; put on pid {f['fault_pid']}, but also: "
                       + ", ".join(f"pid {p} {how}" for p, how in f["ambiguous"]))
    if r["unaccounted"]:
        out += ["", f"### Unaccounted failures ({len(r['unaccounted'])})", ""]
        groups = {}
        for f in r["unaccounted"]:
            groups.setdefault((f["kind"], f["cls"]), []).append(f)
        for (kind, cls), fs in groups.items():
            out.append(f"- {kind}: {cls}: {len(fs)}")
        out.append("")
        for f in r["unaccounted"][:25]:
            out.append("- " + describe(r, f))
            for t, lvl, msg in f["evidence"]:
                out.append(f"    - corral {rel(r, t)} {lvl} {msg[:220]}")
        if len(r["unaccounted"]) > 25:
            out.append(f"- ... {len(r['unaccounted']) - 25} more in failures.json")
    if r["problems"] or run.get("stuck_clients") or r["stop_starts"] or r["unexplained_kills"]:
        out += ["", "## Other findings", ""]
        out += [f"- {p}" for p in r["problems"]]
        if r["unexplained_kills"]:
            out.append("- workers SIGKILLed with no reason logged and not by the run:")
            out += [f"    - {line[:220]}" for line in r["unexplained_kills"][:10]]
        if run.get("stuck_clients"):
            out.append(f"- clients still busy after the load: {run['stuck_clients']}")
        if r["stop_starts"]:
            out.append("- corral started workers after SIGTERM (graceful stop):")
            out += [f"    - {line[:220]}" for line in r["stop_starts"][:6]]
    out += ["", "## Supervisor", ""]
    if r["samples"]:
        pids = len(r["samples"][0]) > 5
        out.append("| t | RSS MiB | fds | live workers | zombies |" + (" corral pid |" if pids else ""))
        out.append("|---:|---:|---:|---:|---:|" + ("---:|" if pids else ""))
        step = max(1, len(r["samples"]) // 12)
        picked = r["samples"][::step]
        if picked[-1] is not r["samples"][-1]:
            picked.append(r["samples"][-1])
        for t, rss, nfd, nw, nz, *pid in picked:
            out.append(f"| {t:.0f}s | {rss / 1024:.1f} | {nfd} | {nw} | {nz} |"
                       + (f" {pid[0]} |" if pid else ""))
        sl, floor = r["rss_slope"], r["rss_floor_slope"]
        out.append(f"\nRSS: {r['rss_start']:.1f} MiB at the start, max {r['rss_max']:.1f}, "
                   f"{r['rss_end']:.1f} at the end; slope from {r['rss_since']:.0f}s to the end of "
                   "the load" + (" (the last corral's)" if r['rss_since'] != a.warmup else "")
                   + ": "
                   + ("n/a" if sl is None else f"{sl:+.3f} MiB/min") + f" ({r['rss_points']} "
                   f"samples, every {a.sample_every:g}s); slope of the 30 s minima: "
                   + ("n/a" if floor is None else f"{floor:+.3f} MiB/min"))
    if r["rss_jumps"]:
        out.append("")
        out.append("RSS rises of more than 2 MiB between two samples, with the large requests "
                   "in flight across each:")
        for lo, hi, rise, now, busy in r["rss_jumps"][:12]:
            kinds = {}
            for req in busy:
                kinds[req] = kinds.get(req, 0) + 1
            out.append(f"- {lo:.0f}-{hi:.0f}s: +{rise:.1f} MiB (to {now:.1f}): "
                       + (", ".join(f"{req} x{n}" if n > 1 else req for req, n in
                                    sorted(kinds.items())) or "none"))
    start, st = run.get("start") or {}, run.get("settle")
    if st:
        out.append(f"end state after {st['seconds']:g}s of settling: {len(st['workers'])} live "
                   f"workers (configured {a.workers}; {len(start.get('workers', []))} at the "
                   f"start), {len(st['zombies'])} zombies, corral fds {len(start.get('fds', {}))}"
                   f" at the start and {len(st['fds'])} at the end")
        if len(st["fds"]) > len(start.get("fds", {})) + a.fd_slack:
            out.append(f"fd kinds at the start: {fd_kinds(start['fds'])}; at the end: "
                       f"{fd_kinds(st['fds'])}")
    stop = run.get("stop")
    if stop:
        killed = f"worker pid {stop['victim']} SIGKILLed 0.3 s later" if stop["victim"] else (
            "no worker killed")
        out.append(f"graceful stop (SIGTERM with {2 * a.workers} requests of 3 s in flight, "
                   f"{killed}): exit {stop['code']} "
                   f"after {stop['seconds']}s; workers started after SIGTERM: "
                   + (", ".join(f"pid {p} at {t}s" for p, t in stop["started"].items())
                      or "none"))
    if run.get("killed_at_cleanup"):
        out.append(f"still running after the stop, SIGKILLed: {run['killed_at_cleanup']}")
    out += ["", "## Pass criteria", "", "| criterion | result | value |", "|---|---|---|"]
    for name, ok, value in r["criteria"]:
        out.append(f"| {name} | {'PASS' if ok else 'FAIL'} | {value} |")
    out.append("")
    out.append("**PASS**" if r["passed"] else "**FAIL**")
    return "\n".join(out) + "\n"


def save(out_dir, r):
    def dump(name, data):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(data, f, indent=1, default=str)

    dump("failures.json", [{k: v for k, v in f.items()} for f in r["failures"]])
    dump("faults.json", r["faults"])
    dump("summary.json", dict(counts={f"{k} / {c}": n for (k, c), n in r["counts"].items()},
                              accounted={f"{c} / {w}": n for (c, w), n in r["accounted"].items()},
                              unaccounted=len(r["unaccounted"]), criteria=r["criteria"],
                              rss_slope=r["rss_slope"], passed=r["passed"], run=r["run"]))
    with open(os.path.join(out_dir, "samples.csv"), "w") as f:
        f.write("seconds,rss_kib,fds,workers,zombies\n")
        for row in r["samples"]:
            f.write(",".join(str(round(x, 2)) for x in row) + "\n")
