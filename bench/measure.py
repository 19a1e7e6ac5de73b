#!/usr/bin/env python3
"""wghook cost measurements (issue 13), driven by bench/run.

Python standard library only. Runs as root. See bench/README.md.

Every external process this script starts is recorded by PID in
`self.children` and ended by PID in `cleanup()` (also on failure); the
network namespace and the temporary directory are made by bench/run, which
removes them in its trap.
"""

import argparse
import datetime
import http.server
import json
import os
import re
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_s(x):
    if x is None:
        return "n/a"
    if x < 1e-3:
        return f"{x * 1e6:.0f} µs"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    return f"{x:.2f} s"


def fmt_kib(k):
    if k is None:
        return "n/a"
    return f"{k / 1024:.1f} MiB"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    """utime+stime of a live process, in seconds (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem(pid):
    """(VmRSS, VmHWM) in KiB."""
    rss = hwm = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


def run_once(argv):
    """Runs argv (an `ip netns exec NS CMD...` or a plain command) to the end.

    Returns (stdout bytes, wall s, cpu s, peak RSS KiB). cpu is user+sys
    from wait4 on the child: `ip netns exec` execs, so it is the command's
    own plus the little `ip` and /usr/bin/time spend (see `baseline`). The
    peak RSS is /usr/bin/time's %M of the command alone: ru_maxrss of a
    child forked from Python would include Python's RSS at the fork.
    """
    with tempfile.TemporaryFile() as errf, tempfile.NamedTemporaryFile("r") as tf:
        if argv[:2] == ["ip", "netns"]:
            full = argv[:4] + ["/usr/bin/time", "-o", tf.name, "-f", "%M"] + argv[4:]
        else:
            full = ["/usr/bin/time", "-o", tf.name, "-f", "%M"] + argv
        t0 = time.monotonic()
        p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=errf)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        errf.seek(0)
        err = errf.read()
        lines = tf.read().split()
        maxrss = int(lines[-1]) if lines else None
    if p.returncode != 0:
        raise RuntimeError(f"{argv} exited {p.returncode}: {err.decode(errors='replace')[-2000:]}")
    return out, wall, ru.ru_utime + ru.ru_stime, maxrss


def median_runs(argv, repeat, baseline=None):
    """Median of `repeat` runs; wall and cpu less the baseline's (the same
    launch of `true`), when given."""
    walls, cpus, rsss = [], [], []
    out = b""
    for _ in range(repeat):
        out, wall, cpu, rss = run_once(argv)
        walls.append(wall)
        cpus.append(cpu)
        rsss.append(rss)
    bw, bc = (baseline["wall"], baseline["cpu"]) if baseline else (0.0, 0.0)
    return {
        "wall": max(0.0, statistics.median(walls) - bw),
        "cpu": max(0.0, statistics.median(cpus) - bc),
        "rss": statistics.median(rsss),
        "lines": out.count(b"\n"),
        "bytes": len(out),
        "repeat": repeat,
    }


def scrape(url):
    """Prometheus text -> {name{labels}: value} (no per-peer series are on)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def metric_sum(m, name, label_filter=None):
    total = 0.0
    for k, v in m.items():
        base = k.split("{", 1)[0]
        if base != name:
            continue
        if label_filter and label_filter not in k:
            continue
        total += v
    return total


class Receiver:
    """A tiny HTTP receiver in threads: 503 while down, 204 when up.

    Counts requests, and the most requests in progress at once, separately
    for the down and the up phase.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.down = True
        self.count = {True: 0, False: 0}
        self.active = 0
        self.max_active = {True: 0, False: 0}
        self.connections = {True: 0, False: 0}
        self.first_ok = None
        self.last_ok = None
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with rec.lock:
                    rec.connections[rec.down] += 1

            def do_POST(self):
                with rec.lock:
                    rec.active += 1
                    down = rec.down
                    rec.max_active[down] = max(rec.max_active[down], rec.active)
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    if n:
                        self.rfile.read(n)
                    self.send_response_only(503 if down else 204)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                finally:
                    with rec.lock:
                        rec.active -= 1
                        rec.count[down] += 1
                        if not down:
                            now = time.monotonic()
                            if rec.first_ok is None:
                                rec.first_ok = now
                            rec.last_ok = now

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = args.tmp
        self.ns = args.ns
        self.wghook = args.wghook
        self.children = []  # Popen objects we started
        self.results = []  # (section, figure, value)
        self.notes = []

    # ---------------------------------------------------------------- helpers
    def spawn(self, argv, log_name, **kw):
        f = open(os.path.join(self.tmp, log_name), "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, **kw)
        f.close()
        self.children.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.children:
            self.children.remove(p)

    def cleanup(self):
        for p in list(self.children):
            try:
                self.stop(p, timeout=5)
            except Exception as e:  # keep cleaning
                log(f"cleanup of pid {p.pid}: {e}")

    def nsexec(self, *argv):
        return ["ip", "netns", "exec", self.ns, *argv]

    def add(self, section, figure, value):
        self.results.append((section, figure, value))
        log(f"{section}: {figure} = {value}")

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------ wireguard-go + UAPI
    def uapi_set(self, ifname, body):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(f"/var/run/wireguard/{ifname}.sock")
        s.sendall(b"set=1\n" + body + b"\n")
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        s.close()
        if reply.strip() != b"errno=0":
            raise RuntimeError(f"UAPI set on {ifname}: {reply!r}")

    def start_wireguard(self, ifname, n):
        sock = f"/var/run/wireguard/{ifname}.sock"
        p = self.spawn(self.nsexec("wireguard-go", "-f", ifname), f"wireguard-go-{ifname}.log",
                       env=dict(os.environ, LOG_LEVEL="error"))
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wireguard-go for {ifname} did not start; see {self.tmp}")
            time.sleep(0.05)
        t0 = time.monotonic()
        batch = 5000
        first = True
        for start in range(0, n, batch):
            parts = []
            if first:
                parts.append(f"private_key={secrets.token_hex(32)}\nlisten_port=0\n")
                first = False
            for i in range(start, min(n, start + batch)):
                j = i + 1
                parts.append(
                    f"public_key={secrets.token_hex(32)}\n"
                    f"allowed_ip=10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}/32\n"
                )
            self.uapi_set(ifname, "".join(parts).encode())
        subprocess.run(self.nsexec("ip", "address", "add", "192.0.2.1/24", "dev", ifname), check=True)
        subprocess.run(self.nsexec("ip", "link", "set", ifname, "up"), check=True)
        log(f"{ifname}: {n} peers added over UAPI in {time.monotonic() - t0:.1f} s")
        return p

    # ------------------------------------------------------------- sections
    def userspace(self, n, ifname):
        sec = f"userspace, {n:,} peers ({ifname})"
        wg = self.start_wireguard(ifname, n)
        try:
            # 2. wg show IF dump
            base = median_runs(self.nsexec("true"), 7)
            self.add(sec, "launch overhead subtracted below (`ip netns exec` + /usr/bin/time of `true`): wall / cpu",
                     f"{fmt_s(base['wall'])} / {fmt_s(base['cpu'])}")
            dump = median_runs(self.nsexec("wg", "show", ifname, "dump"), self.a.repeat, base)
            if dump["lines"] != n + 1:
                raise RuntimeError(f"wg show {ifname} dump printed {dump['lines']} lines, expected {n + 1}")
            self.add(sec, "`wg show dump`: wall (median of %d)" % dump["repeat"], fmt_s(dump["wall"]))
            self.add(sec, "`wg show dump`: cpu user+sys", fmt_s(dump["cpu"]))
            self.add(sec, "`wg show dump`: peak RSS", fmt_kib(dump["rss"]))
            base_cpu = dump["cpu"]

            state = os.path.join(self.tmp, f"state-{ifname}")
            os.mkdir(state)
            cfg = self.write(f"wghook-{ifname}.yaml", (
                "monitor:\n"
                f"  interval: 1s\n  backend: userspace\n  interfaces: [{ifname}]\n"
                f"  state_dir: {state}\n"
                "log:\n  level: warn\n"
            ))
            # 4. wghook peers --json (one call, before the daemon runs)
            pr = median_runs(self.nsexec(self.wghook, "peers", "--json", "-c", cfg), 1, base)
            self.add(sec, "`wghook peers --json`: wall (1 call)", fmt_s(pr["wall"]))
            self.add(sec, "`wghook peers --json`: cpu user+sys", fmt_s(pr["cpu"]))
            self.add(sec, "`wghook peers --json`: peak RSS", fmt_kib(pr["rss"]))
            self.add(sec, "`wghook peers --json`: cpu / `wg show dump` cpu",
                     f"{pr['cpu'] / base_cpu:.1f}x" if base_cpu > 0 else "n/a")

            # 3. wghook run
            t_start = time.monotonic()
            d = self.spawn(self.nsexec(self.wghook, "run", "-c", cfg), f"wghook-{ifname}.log")
            db = os.path.join(state, "wghook.db")
            while not os.path.exists(db):
                if d.poll() is not None:
                    raise RuntimeError(f"wghook run exited {d.returncode}; see {self.tmp}/wghook-{ifname}.log")
                if time.monotonic() - t_start > 120:
                    raise RuntimeError("wghook run made no database in 120 s")
                time.sleep(0.05)
            # Settle: the first poll (which saves every peer's state) plus a few.
            time.sleep(self.a.settle)
            if d.poll() is not None:
                raise RuntimeError(f"wghook run exited {d.returncode}")
            c0, t0 = proc_cpu(d.pid), time.monotonic()
            settle_cpu = c0
            time.sleep(self.a.polls * 1.0)
            c1, t1 = proc_cpu(d.pid), time.monotonic()
            rss, hwm = proc_mem(d.pid)
            if d.poll() is not None:
                raise RuntimeError(f"wghook run exited {d.returncode}")
            polls = round((t1 - t0) / 1.0)
            per_poll = (c1 - c0) / polls
            self.add(sec, "`wghook run`: cpu of start + first polls (settle %.0f s)" % (t0 - t_start),
                     fmt_s(settle_cpu))
            self.add(sec, f"`wghook run`: cpu per poll (over {polls} polls)", fmt_s(per_poll))
            self.add(sec, "`wghook run`: cpu share of one core at 1 s interval", f"{per_poll * 100:.1f} %")
            self.add(sec, "`wghook run`: cpu per poll / `wg show dump` cpu",
                     f"{per_poll / base_cpu:.1f}x" if base_cpu > 0 else "n/a")
            self.add(sec, "`wghook run`: peak RSS (VmHWM)", fmt_kib(hwm))
            self.add(sec, "`wghook run`: steady RSS (VmRSS)", fmt_kib(rss))
            self.add(sec, "`wghook run`: peak RSS / `wg show dump` peak RSS",
                     f"{hwm / dump['rss']:.1f}x" if dump["rss"] else "n/a")
            size = sum(os.path.getsize(db + x) for x in ("", "-wal") if os.path.exists(db + x))
            self.add(sec, "state database size (with -wal)", fmt_kib(size // 1024))
            self.stop(d)
            if d.returncode not in (0, -signal.SIGTERM):
                self.notes.append(f"wghook run ({ifname}) exited {d.returncode} at SIGTERM")
        finally:
            self.stop(wg)

    def scenario(self, peers, events, at):
        """A simulated host: `peers` peers from the start, `events` of them handshake at `at` s."""
        # Bulk steps: peers p0..p{peers-1}, each with one address of
        # 10.0.0.0/8; every `step`-th of them handshakes at `at`.
        step = max(1, peers // events)
        lines = [
            "steps:\n",
            "  - at: 0s\n    add_interface: {name: wgsim, listen_port: 51820}\n",
            f"  - at: 0s\n    add_peers: {{interface: wgsim, count: {peers}, prefix: p, network: 10.0.0.0/8}}\n",
            f"  - at: {at}s\n    handshakes: {{interface: wgsim, count: {events}, prefix: p, every: {step}}}\n",
        ]
        path = self.write(f"scenario-{peers}-{events}.yaml", "".join(lines))
        return path

    def sim_config(self, name, scenario, url, mport):
        state = os.path.join(self.tmp, f"state-{name}")
        os.mkdir(state)
        cfg = self.write(f"wghook-{name}.yaml", (
            f"webhook:\n  url: {url}\n"
            "delivery:\n  max_in_flight: 16\n"
            "monitor:\n  interval: 1s\n  backend: simulated\n"
            f"  scenario: {scenario}\n  announce_on_start: none\n  host: bench\n"
            f"  state_dir: {state}\n"
            f"metrics:\n  listen: 127.0.0.1:{mport}\n  per_peer_metrics: false\n"
            "log:\n  level: warn\n"
        ))
        return cfg

    def wait_metrics(self, murl, d, cond, timeout, what, every=0.05):
        deadline = time.monotonic() + timeout
        while True:
            if d.poll() is not None:
                raise RuntimeError(f"wghook run exited {d.returncode} while waiting for {what}")
            try:
                m = scrape(murl)
                if cond(m):
                    return m, time.monotonic()
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out ({timeout} s) waiting for {what}")
            time.sleep(every)

    def wait_committed(self, murl, d, cfg):
        """When the daemon's pending gauge got back to 0, then when the outbox
        was empty as `wghook outbox` reads it from the database."""
        _, t_pending0 = self.wait_metrics(murl, d, lambda m: metric_sum(m, "wghook_pending_events") == 0,
                                          600, "pending_events 0")
        while not self.outbox_empty(cfg):
            time.sleep(0.1)
        return t_pending0, time.monotonic()

    def outbox_empty(self, cfg):
        out = subprocess.run([self.wghook, "outbox", "--json", "-c", cfg], check=True,
                             capture_output=True).stdout
        return len(json.loads(out)) == 0

    def throughput(self, peers, events):
        sec = f"throughput: {events:,} connects at once (simulated host, {peers:,} peers)"
        port, mport = free_port(), free_port()
        ng = os.path.join(self.tmp, "nginx")
        os.mkdir(ng)
        access = os.path.join(ng, "access.log")
        conf = self.write("nginx/nginx.conf", f"""
worker_processes 1;
pid {ng}/nginx.pid;
error_log {ng}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format bench '$msec $status';
    access_log {access} bench;
    client_body_temp_path {ng}/body;
    proxy_temp_path {ng}/proxy;
    fastcgi_temp_path {ng}/fastcgi;
    uwsgi_temp_path {ng}/uwsgi;
    scgi_temp_path {ng}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 204; }}
    }}
}}
""")
        nginx = self.spawn(["nginx", "-e", f"{ng}/error.log", "-p", ng, "-c", conf, "-g", "daemon off;"],
                           "nginx.out")
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start; see {ng}/error.log")
                time.sleep(0.05)
        t = time.monotonic()
        scen = self.scenario(peers, events, self.a.event_at)
        self.add(sec, "scenario file", f"{os.path.getsize(scen) / 1e6:.1f} MB, written in {time.monotonic() - t:.1f} s")
        cfg = self.sim_config("throughput", scen, f"http://127.0.0.1:{port}/hook", mport)
        murl = f"http://127.0.0.1:{mport}/metrics"
        try:
            t_start = time.monotonic()
            d = self.spawn([self.wghook, "run", "-c", cfg], "wghook-throughput.log")
            _, t_first = self.wait_metrics(murl, d, lambda m: metric_sum(m, "wghook_poll_duration_seconds_count") >= 1,
                                           600, "the first poll")
            self.add(sec, "start until the first poll is done (load + 1st poll)", fmt_s(t_first - t_start))
            m, t_ev = self.wait_metrics(murl, d, lambda m: metric_sum(m, "wghook_events_total") >= events,
                                        600, f"{events} events", every=0.02)
            # The poll that made the events: its end is when they are counted.
            self.add(sec, "events counted by the poll", f"{metric_sum(m, 'wghook_events_total'):.0f}")
            last_count, t_all = 0, None
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                with open(access, "rb") as f:
                    data = f.read()
                last_count = data.count(b"\n")
                if last_count >= events:
                    t_all = time.monotonic()
                    break
                if d.poll() is not None:
                    raise RuntimeError("wghook run exited during delivery")
                time.sleep(0.02)
            if t_all is None:
                raise RuntimeError(f"only {last_count} of {events} webhooks reached nginx")
            stamps = [float(l.split()[0]) for l in data.splitlines()]
            statuses = set(l.split()[1].decode() for l in data.splitlines())
            # Committed: the daemon's pending gauge back to 0, then the outbox
            # as `wghook outbox` reads it from the database.
            t_pending0, t_outbox = self.wait_committed(murl, d, cfg)
            rss, hwm = proc_mem(d.pid)
            cpu = proc_cpu(d.pid)
            span_rx = max(stamps) - min(stamps)
            self.add(sec, "events counted -> all requests at nginx", fmt_s(t_all - t_ev))
            self.add(sec, "webhooks/s (events counted -> last request at nginx)",
                     f"{events / (t_all - t_ev):,.0f}")
            self.add(sec, "webhooks/s at nginx (first -> last request)",
                     f"{(events - 1) / span_rx:,.0f}" if span_rx > 0 else "n/a")
            self.add(sec, "events counted -> pending_events 0", fmt_s(t_pending0 - t_ev))
            self.add(sec, "events counted -> `wghook outbox --json` empty", fmt_s(t_outbox - t_ev))
            self.add(sec, "requests at nginx (statuses)", f"{len(stamps):,} ({', '.join(sorted(statuses))})")
            self.add(sec, "wghook cpu, whole run", fmt_s(cpu))
            self.add(sec, "wghook peak RSS (VmHWM) / RSS after", f"{fmt_kib(hwm)} / {fmt_kib(rss)}")
            self.stop(d)
        finally:
            self.stop(nginx, sig=signal.SIGQUIT)

    def recovery(self, peers, events):
        sec = f"recovery: {events:,} events queued while the receiver is down"
        rec = Receiver()
        mport = free_port()
        scen = self.scenario(peers, events, self.a.event_at)
        cfg = self.sim_config("recovery", scen, f"http://127.0.0.1:{rec.port}/hook", mport)
        murl = f"http://127.0.0.1:{mport}/metrics"
        try:
            d = self.spawn([self.wghook, "run", "-c", cfg], "wghook-recovery.log")
            _, t_ev = self.wait_metrics(murl, d, lambda m: metric_sum(m, "wghook_events_total") >= events,
                                        600, f"{events} events", every=0.02)
            # Down for `hold` s after the events were counted: a webhook
            # whose receiver fails gets one probe at a time, so not every
            # event is tried while it is down.
            time.sleep(self.a.hold)
            with rec.lock:
                rec.down = False
                t_back = time.monotonic()
                down_requests = rec.count[True]
            m = scrape(murl)
            pending_at_back = metric_sum(m, "wghook_pending_events")
            deadline = time.monotonic() + 1800
            while rec.count[False] < events:
                if time.monotonic() > deadline or d.poll() is not None:
                    raise RuntimeError(f"only {rec.count[False]} of {events} delivered after the receiver came back")
                time.sleep(0.02)
            t_all = time.monotonic()
            t_pending0, t_outbox = self.wait_committed(murl, d, cfg)
            rss, hwm = proc_mem(d.pid)
            self.add(sec, "receiver down for", f"{fmt_s(t_back - t_ev)} after the events were counted")
            self.add(sec, "requests while down (503)", f"{down_requests:,} ({down_requests / events:.2f} per event)")
            self.add(sec, "max concurrent requests while down", f"{rec.max_active[True]}")
            self.add(sec, "TCP connections opened while down", f"{rec.connections[True]:,}")
            self.add(sec, "pending at \"back\"", f"{pending_at_back:.0f}")
            self.add(sec, "back -> first 204", fmt_s(rec.first_ok - t_back))
            self.add(sec, "back -> all delivered (receiver count)", fmt_s(t_all - t_back))
            self.add(sec, "back -> pending_events 0", fmt_s(t_pending0 - t_back))
            self.add(sec, "back -> `wghook outbox --json` empty", fmt_s(t_outbox - t_back))
            self.add(sec, "webhooks/s after the first 204 (first -> last 204)",
                     f"{(events - 1) / (rec.last_ok - rec.first_ok):,.0f}" if rec.last_ok > rec.first_ok else "n/a")
            self.add(sec, "max concurrent requests while up", f"{rec.max_active[False]}")
            self.add(sec, "requests while up (204)", f"{rec.count[False]:,}")
            self.add(sec, "wghook peak RSS (VmHWM) / RSS after", f"{fmt_kib(hwm)} / {fmt_kib(rss)}")
            self.stop(d)
        finally:
            rec.stop()

    # ---------------------------------------------------------------- report
    def machine(self):
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1])
        commit = subprocess.run(["git", "-C", self.a.repo, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
        src_commit = subprocess.run(["git", "-C", self.a.repo, "log", "-1", "--format=%h", "--", "src", "Cargo.toml", "Cargo.lock"],
                                    capture_output=True, text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", self.a.repo, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
        wgv = subprocess.run(["wireguard-go", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        ngv = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
        return [
            ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            ("wghook commit", commit + (" (src modified)" if dirty else "") + f"; last change to src: {src_commit}"),
            ("nproc", str(os.cpu_count())),
            ("cpu", model),
            ("memory", f"{mem / 1024 / 1024:.1f} GiB"),
            ("kernel", os.uname().release),
            ("wireguard-go", wgv),
            ("nginx", ngv),
            ("mode", "quick" if self.a.quick else "full"),
            ("load average at end", open("/proc/loadavg").read().split()[0]),
        ]

    def report(self):
        rows = self.machine()
        print()
        print("| machine | |")
        print("|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
        print()
        print("| section | figure | value |")
        print("|---|---|---|")
        for s, f, v in self.results:
            print(f"| {s} | {f} | {v} |")
        for n in self.notes:
            print(f"\nnote: {n}")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ns", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--wghook", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--only", default="userspace,throughput,recovery")
    a = ap.parse_args()
    if a.quick:
        a.peers = [2000]
        a.polls, a.repeat, a.settle = 5, 3, 3.0
        a.events, a.sim_peers, a.event_at, a.hold = 1000, 10000, 3, 3.0
    else:
        a.peers = [10000, 65536]
        a.polls, a.repeat, a.settle = 30, 5, 5.0
        # 10 % of a 100,000-peer host connect at once (the scenario's bulk
        # steps hold any number of peers).
        a.events, a.sim_peers, a.event_at, a.hold = 10000, 100000, 5, 10.0
    b = Bench(a)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    only = a.only.split(",")
    pid = os.getppid()
    try:
        if "userspace" in only:
            for k, n in enumerate(a.peers):
                b.userspace(n, f"wgb{pid % 10000000}{'abcdefgh'[k]}")
        if "throughput" in only:
            b.throughput(a.sim_peers, a.events)
        if "recovery" in only:
            b.recovery(a.sim_peers, a.events)
    except BaseException as e:
        b.notes.append(f"FAILED: {type(e).__name__}: {e}")
        b.cleanup()
        b.report()
        raise
    b.cleanup()
    b.report()


if __name__ == "__main__":
    main()
