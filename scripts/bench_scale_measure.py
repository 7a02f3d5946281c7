"""Measurements for scripts/bench-scale.sh (python3, stdlib only).

Each subcommand measures one phase against a running pgconn_exporter and writes its figures as JSON; `report`
turns them into the table (figure, goal, met or not) that the script records in docs/benchmarks.md. The shell
script owns every process (PostgreSQL, PgBouncer, the exporter); the psql pollers started here are children of
this script and stopped by it. Every wait has a deadline.
"""

import argparse
import http.client
import json
import math
import os
import re
import selectors
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROBE_INTERVAL = 5.0  # the config bench-scale.sh writes
LOGIN_INTERVAL = 60.0

# ---------------------------------------------------------------------------------------------------------------
# HTTP and /metrics


def get(host, port, path, headers=None, timeout=30.0):
    """One GET on a new connection, like a Prometheus scrape: (status, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Exporter:
    """The exporter under test: its address and PID."""

    def __init__(self, address, pid):
        host, _, port = address.rpartition(":")
        self.host, self.port, self.pid = host, int(port), int(pid)

    def metrics(self, headers=None):
        status, body = get(self.host, self.port, "/metrics", headers)
        if status != 200:
            raise RuntimeError(f"/metrics: HTTP {status}")
        return body

    def snapshot(self):
        """The families this benchmark reads, parsed from one full scrape, with the time it was taken."""
        body = self.metrics()
        snap = parse_metrics(body)
        snap["time"] = time.time()
        # The page is served ready, up to a few seconds old at thousands of targets: its counters are as of its
        # render, which the newest probe success on it tells (every target probes every 5 s), not as of the GET.
        if snap["newest_success"] is not None and snap["newest_success"] <= snap["time"]:
            snap["time"] = snap["newest_success"]
        return snap

    def up_count(self):
        """Targets whose session is up (`pgconn_up 1`), from /health (one short line a target; a 503 still
        lists them), which costs the exporter far less than rendering /metrics at thousands of targets."""
        status, body = get(self.host, self.port, "/health", timeout=10.0)
        if status not in (200, 503):
            raise RuntimeError(f"/health: HTTP {status}")
        return len(HEALTH_UP.findall(body))

    def ready(self):
        status, _ = get(self.host, self.port, "/-/ready", timeout=5.0)
        return status == 200

    def gauge(self, body, name):
        """A sample without labels, found without parsing the whole page (bytes.find is fast on 35 MB)."""
        key = b"\n" + name.encode() + b" "
        at = body.find(key)
        if at < 0:
            return math.nan
        end = body.find(b"\n", at + len(key))
        return float(body[at + len(key) : end])


HEALTH_UP = re.compile(rb"^\S+ up ", re.M)

SUMMED = {
    "pgconn_up",
    "pgconn_probes_total",
    "pgconn_login_checks_total",
    "pgconn_connection_attempts_total",
    "pgconn_resets_total",
    "pgconn_disconnects_total",
}
BY_REASON = {"pgconn_probe_failures_total", "pgconn_connection_failures_total", "pgconn_login_failures_total"}
SINGLE = {
    "pgconn_exporter_loop_overdue_seconds",
    "pgconn_exporter_connects_in_progress",
    "pgconn_exporter_connects_waiting",
    "pgconn_exporter_loop_lag_seconds_sum",
    "pgconn_exporter_loop_lag_seconds_count",
    "process_resident_memory_bytes",
    "process_open_fds",
}
LAG_BUCKET = "pgconn_exporter_loop_lag_seconds_bucket"
LAST_SUCCESS = "pgconn_last_success_timestamp_seconds"


def parse_metrics(body):
    """Sums of the per-target families, failures by reason, the loop-lag buckets, a few gauges, series, bytes."""
    sums = {name: 0.0 for name in SUMMED}
    counts = {name: 0 for name in SUMMED}
    reasons = {name: {} for name in BY_REASON}
    single, lag = {}, {}
    series = 0
    newest_success = None
    for line in body.decode().split("\n"):
        if not line or line[0] == "#":
            continue
        series += 1
        space = line.rfind(" ")
        key, value = line[:space], float(line[space + 1 :])
        brace = key.find("{")
        name = key if brace < 0 else key[:brace]
        if name in SUMMED:
            sums[name] += value
            counts[name] += 1
        elif name in BY_REASON:
            start = key.find('reason="') + len('reason="')
            reason = key[start : key.index('"', start)]
            reasons[name][reason] = reasons[name].get(reason, 0.0) + value
        elif name in SINGLE:
            single[name] = value
        elif name == LAST_SUCCESS:
            newest_success = value if newest_success is None else max(newest_success, value)
        elif name == LAG_BUCKET:
            start = key.find('le="') + len('le="')
            lag[key[start : key.index('"', start)]] = value
    return {
        "sums": sums,
        "counts": counts,
        "reasons": reasons,
        "single": single,
        "lag": lag,
        "series": series,
        "bytes": len(body),
        "newest_success": newest_success,
    }


def lag_window(before, after):
    """Loop lag between two snapshots: timers fired, p99 in ms as histogram_quantile computes it (linear within a
    bucket), the bucket bounds p99 lies between, and the shares of timers later than 10 ms and 100 ms."""
    buckets = sorted(
        ((math.inf if le == "+Inf" else float(le)), after["lag"][le] - before["lag"].get(le, 0.0))
        for le in after["lag"]
    )
    total = buckets[-1][1] if buckets else 0.0
    out = {"timers": total, "p99_ms": None, "p99_bucket_ms": None, "over_10ms": None, "over_100ms": None}
    if total <= 0:
        return out
    cum = dict(buckets)
    out["over_10ms"] = (total - cum.get(0.01, total)) / total
    out["over_100ms"] = (total - cum.get(0.1, total)) / total
    rank, lower, below = 0.99 * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == math.inf:
                value = lower
            else:
                value = lower + (upper - lower) * (rank - below) / (count - below) if count > below else upper
            out["p99_ms"] = 1000 * value
            out["p99_bucket_ms"] = [1000 * lower, None if upper == math.inf else 1000 * upper]
            break
        lower, below = upper, count
    mean = (after["single"].get("pgconn_exporter_loop_lag_seconds_sum", 0.0)
            - before["single"].get("pgconn_exporter_loop_lag_seconds_sum", 0.0))
    out["mean_ms"] = 1000 * mean / total
    return out


def reason_delta(before, after, family):
    """Failures by reason between two snapshots, only the reasons that grew."""
    out = {}
    for reason, value in after["reasons"][family].items():
        delta = value - before["reasons"][family].get(reason, 0.0)
        if delta:
            out[reason] = delta
    return out


def timeout_delta(before, after):
    """reason="timeout" failures between two snapshots, per family (probe, connection, login)."""
    return {
        family.split("_")[1]: after["reasons"][family].get("timeout", 0.0)
        - before["reasons"][family].get("timeout", 0.0)
        for family in sorted(BY_REASON)
    }


# ---------------------------------------------------------------------------------------------------------------
# /proc


def proc_cpu_seconds(pid):
    """utime + stime of a process in seconds (fields 14 and 15 of proc(5))."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


THREAD_GROUPS = (("connect-", "connect"), ("pgconn-monitor", "loop"), ("MHD-", "http"))


def thread_cpu_seconds(pid):
    """utime + stime by kind of thread, from the names the exporter gives its threads (/proc/PID/task/*/comm):
    `loop` (the I/O thread), `connect` (connect workers: SCRAM), `http` (libmicrohttpd) and `other` (the page
    refresher on dispatch threads, DNS, files, logs)."""
    groups = {"loop": 0.0, "connect": 0.0, "http": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        group = next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
        groups[group] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return groups


def proc_status_bytes(pid, key):
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return math.nan


# ---------------------------------------------------------------------------------------------------------------
# psql pollers: a long-running psql reading queries from a pipe (one login, not one a poll), respawned when its
# connection is lost (psql exits then: it is not interactive).


class PsqlPoller(threading.Thread):
    """Runs `query` every `interval` seconds through a psql coprocess and keeps the maximum of each column."""

    def __init__(self, argv, env, query, interval):
        super().__init__(daemon=True)
        self.argv, self.env, self.query, self.interval = argv, env, query, interval
        self.maxima, self.polls, self.failures = {}, 0, 0
        self.proc = None
        self.buffer = b""
        self.stopping = threading.Event()

    def rows(self, timeout=2.0):
        """One round trip: the query's rows as lists of strings, or None (and the coprocess is gone)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, bufsize=0)
            self.buffer = b""
        try:
            self.proc.stdin.write(self.query.encode() + b"\n\\echo __end__\n")
        except OSError:
            self.kill()
            return None
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"__end__\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.kill()
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.kill()
                    return None
                self.buffer += chunk
        finally:
            selector.close()
        text, _, self.buffer = self.buffer.partition(b"__end__\n")
        return [line.split("|") for line in text.decode().splitlines() if line]

    def kill(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def record(self, key, value):
        if value > self.maxima.get(key, -math.inf):
            self.maxima[key] = value

    def run(self):
        while not self.stopping.is_set():
            rows = self.rows()
            self.polls += 1
            if rows is None:
                self.failures += 1
            else:
                self.take(rows)
            self.stopping.wait(self.interval)

    def take(self, rows):
        """`name|value` rows (SHOW LISTS) or one row of numbers (a count)."""
        for row in rows:
            if len(row) == 2 and not row[0].lstrip("-").isdigit():
                try:
                    self.record(row[0], float(row[1]))
                except ValueError:
                    pass
            else:
                for i, cell in enumerate(row):
                    try:
                        self.record(f"c{i}", float(cell))
                    except ValueError:
                        pass

    def stop(self):
        self.stopping.set()
        self.join(timeout=5)
        self.kill()


def pollers(args, interval):
    """The PgBouncer admin console (SHOW LISTS: login_clients, used_clients, used_servers) and PostgreSQL's
    client backends (pg_stat_activity over the unix socket; PgBouncer's connections come over TCP)."""
    env = dict(os.environ, PGPASSFILE=args.passfile, PGCONNECT_TIMEOUT="2")
    bouncer = PsqlPoller(
        [args.psql, "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(args.bouncer_port), "-U", "bench_monitor",
         "-d", "pgbouncer"], env, "SHOW LISTS;", interval)
    server = PsqlPoller(
        [args.psql, "-X", "-q", "-At", "-h", args.pg_socket, "-p", str(args.pg_port), "-U", "postgres",
         "-d", "postgres"], env,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND client_addr IS NOT NULL;",
        interval)
    bouncer.start()
    server.start()
    return bouncer, server


def poller_figures(bouncer, server):
    return {
        "bouncer_login_clients_max": bouncer.maxima.get("login_clients"),
        "bouncer_used_clients_max": bouncer.maxima.get("used_clients"),
        "bouncer_used_servers_max": bouncer.maxima.get("used_servers"),
        "bouncer_polls": bouncer.polls,
        "bouncer_failed_polls": bouncer.failures,
        "server_backends_max": server.maxima.get("c0"),
        "server_polls": server.polls,
        "server_failed_polls": server.failures,
    }


class GaugePoller(threading.Thread):
    """Scrapes /metrics every `interval` s and keeps the maxima of the loop and admission gauges."""

    NAMES = ("pgconn_exporter_loop_overdue_seconds", "pgconn_exporter_connects_in_progress",
             "pgconn_exporter_connects_waiting")

    def __init__(self, exporter, interval):
        super().__init__(daemon=True)
        self.exporter, self.interval = exporter, interval
        self.maxima = {name: None for name in self.NAMES}
        self.scrapes = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                body = self.exporter.metrics()
                self.scrapes += 1
                for name in self.NAMES:
                    value = self.exporter.gauge(body, name)
                    if not math.isnan(value) and (self.maxima[name] is None or value > self.maxima[name]):
                        self.maxima[name] = value
            except (OSError, RuntimeError, http.client.HTTPException):
                pass
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)


# ---------------------------------------------------------------------------------------------------------------
# Phases


def write(path, figures):
    with open(path, "w") as f:
        json.dump(figures, f, indent=1)


def cmd_startup(args):
    """From the exporter's start (an epoch the script took right before it) to /-/ready and to all targets up."""
    exporter = Exporter(args.address, args.pid)
    deadline = time.time() + args.timeout
    ready_at = all_up_at = None
    polls, up = 0, 0
    while time.time() < deadline and all_up_at is None:
        polls += 1
        try:
            if ready_at is None and exporter.ready():
                ready_at = time.time()
            if ready_at is not None:
                up = exporter.up_count()
                if up >= args.targets:
                    all_up_at = time.time()
        except (OSError, http.client.HTTPException):
            pass
        if not os.path.exists(f"/proc/{exporter.pid}"):
            break
        time.sleep(0.05)
    figures = {
        "ready_s": None if ready_at is None else ready_at - args.start,
        "all_up_s": None if all_up_at is None else all_up_at - args.start,
        "up_at_end": up,
        "polls": polls,
    }
    write(args.out, figures)
    print(json.dumps(figures))


def cmd_steady(args):
    """The steady-state window: /metrics scraped every `scrape_every` s like a Prometheus would (the first and the
    last scrape bound the window), VmRSS every second; CPU from /proc of the exporter and of PgBouncer."""
    exporter = Exporter(args.address, args.pid)
    bouncer, server = pollers(args, 1.0)
    try:
        first = exporter.snapshot()
        threads0 = thread_cpu_seconds(exporter.pid)
        cpu0, bcpu0, t0 = proc_cpu_seconds(exporter.pid), proc_cpu_seconds(args.bouncer_pid), time.time()
        overdue = [first["single"].get("pgconn_exporter_loop_overdue_seconds", 0.0)]
        waiting = [first["single"].get("pgconn_exporter_connects_waiting", 0.0)]
        rss = [proc_status_bytes(exporter.pid, "VmRSS")]
        next_scrape = t0 + args.scrape_every
        end = t0 + args.seconds
        last = first
        while True:
            now = time.time()
            if now >= end:
                break
            time.sleep(min(1.0, end - now))
            rss.append(proc_status_bytes(exporter.pid, "VmRSS"))
            if time.time() >= next_scrape and time.time() < end - 0.5:
                body = exporter.metrics()
                overdue.append(exporter.gauge(body, "pgconn_exporter_loop_overdue_seconds"))
                waiting.append(exporter.gauge(body, "pgconn_exporter_connects_waiting"))
                next_scrape += args.scrape_every
        last = exporter.snapshot()
        cpu1, bcpu1, t1 = proc_cpu_seconds(exporter.pid), proc_cpu_seconds(args.bouncer_pid), time.time()
        threads1 = thread_cpu_seconds(exporter.pid)
        overdue.append(last["single"].get("pgconn_exporter_loop_overdue_seconds", 0.0))
        rss.append(proc_status_bytes(exporter.pid, "VmRSS"))
    finally:
        bouncer.stop()
        server.stop()
    window = last["time"] - first["time"]
    probes = last["sums"]["pgconn_probes_total"] - first["sums"]["pgconn_probes_total"]
    logins = last["sums"]["pgconn_login_checks_total"] - first["sums"]["pgconn_login_checks_total"]
    figures = {
        "window_s": window,
        "cpu_cores": (cpu1 - cpu0) / (t1 - t0),
        "bouncer_cpu_cores": (bcpu1 - bcpu0) / (t1 - t0),
        "thread_cores": {g: (threads1[g] - threads0[g]) / (t1 - t0) for g in threads0},
        "rss_end": rss[-1],
        "rss_min": min(rss),
        "rss_median": sorted(rss)[len(rss) // 2],
        "rss_max": max(rss),
        "lag": lag_window(first, last),
        "overdue_max_s": max(overdue),
        "waiting_max": max(waiting),
        "probes": probes,
        "probes_expected": args.targets * window / PROBE_INTERVAL,
        "login_checks": logins,
        "login_checks_expected": args.targets * window / LOGIN_INTERVAL,
        "probe_failures": reason_delta(first, last, "pgconn_probe_failures_total"),
        "connection_failures": reason_delta(first, last, "pgconn_connection_failures_total"),
        "login_failures": reason_delta(first, last, "pgconn_login_failures_total"),
        "resets": last["sums"]["pgconn_resets_total"] - first["sums"]["pgconn_resets_total"],
        "up_end": last["sums"]["pgconn_up"],
        "scrapes": len(overdue),
        **poller_figures(bouncer, server),
    }
    write(args.out, figures)
    print(json.dumps({k: figures[k] for k in ("cpu_cores", "rss_end", "probes", "probes_expected")}))


def nearest_rank(sorted_values, p):
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk(url, seconds, gzip):
    """wrk -t2 -c10 with --latency: requests/s, p99 ms, errors (timeouts and non-2xx); None without wrk."""
    argv = ["wrk", "-t2", "-c10", f"-d{seconds}s", "--timeout", "30s", "--latency"]
    if gzip:
        argv += ["-H", "Accept-Encoding: gzip"]
    try:
        out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    result = {"rps": None, "p99_ms": None, "timeouts": 0, "non_2xx": 0, "requests": None}
    for line in out.splitlines():
        fields = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(fields[1])
        elif fields[:1] == ["99%"]:
            match = re.fullmatch(r"([0-9.]+)([a-z]+)", fields[1])
            result["p99_ms"] = float(match.group(1)) * WRK_UNITS[match.group(2)]
        elif "requests in" in line:
            result["requests"] = int(fields[0])
        elif line.strip().startswith("Socket errors:"):
            result["timeouts"] = int(re.search(r"timeout (\d+)", line).group(1))
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(fields[-1])
    return result


def cmd_scrape(args):
    """The full page (size, series, gzip size), `count` sequential GETs each on a new connection, and wrk."""
    exporter = Exporter(args.address, args.pid)
    snap = exporter.snapshot()
    gz = exporter.metrics({"Accept-Encoding": "gzip"})
    latencies = []
    for _ in range(args.count):
        start = time.perf_counter()
        exporter.metrics()
        latencies.append(1000 * (time.perf_counter() - start))
    latencies.sort()
    url = f"http://{exporter.host}:{exporter.port}/metrics"
    figures = {
        "bytes": snap["bytes"],
        "gzip_bytes": len(gz),
        "series": snap["series"],
        "p50_ms": nearest_rank(latencies, 50),
        "p99_ms": nearest_rank(latencies, 99),
        "max_ms": latencies[-1],
        "count": args.count,
        "wrk_seconds": args.wrk_seconds,
        "wrk": wrk(url, args.wrk_seconds, gzip=False),
        "wrk_gzip": wrk(url, args.wrk_seconds, gzip=True),
        "rss_after": proc_status_bytes(exporter.pid, "VmRSS"),
        "rss_peak": proc_status_bytes(exporter.pid, "VmHWM"),
    }
    write(args.out, figures)
    print(json.dumps({k: figures[k] for k in ("bytes", "series", "p50_ms", "p99_ms")}))


def cmd_storm(args):
    """A restart (of PgBouncer or PostgreSQL) as the exporter sees it.

    Takes a snapshot, then creates `go_file`: the script stops the process and starts it again, and writes the
    epoch at which it accepted connections again into `accepted_file`. Meanwhile /health is polled every 50 ms
    (the count of targets up), the psql pollers every 100 ms and /metrics every 2 s. After `accepted_file`
    appears: a snapshot, then polls until every target is up and stays up for `settle` s (a dip starts the wait
    again), or `timeout` s pass; a snapshot when all were first up and at least one probe interval has passed
    since accepting (the end of the storm's loop-lag window), and one at the end (failures by reason).
    """
    exporter = Exporter(args.address, args.pid)
    bouncer, server = pollers(args, 0.1)
    gauges = GaugePoller(exporter, 2.0)
    try:
        before = exporter.snapshot()
        gauges.start()
        open(args.go_file, "w").close()
        go_at = time.time()
        deadline = go_at + args.timeout
        accepted_at = at_accept = at_storm_end = None
        first_drop_s = first_all_up = last_all_up = None
        lowest, dips, polls, up = args.targets, 0, 0, None
        while time.time() < deadline:
            polls += 1
            try:
                up = exporter.up_count()
            except (OSError, RuntimeError, http.client.HTTPException):
                up = None
            now = time.time()
            if up is not None:
                lowest = min(lowest, up)
                if up < args.targets and first_drop_s is None:
                    first_drop_s = now - go_at
            if accepted_at is None and os.path.exists(args.accepted_file):
                with open(args.accepted_file) as f:
                    content = f.read().strip()
                if content:
                    accepted_at = float(content)
                    at_accept = exporter.snapshot()
                    continue
            if accepted_at is not None and up is not None:
                if up >= args.targets:
                    if last_all_up is None:
                        last_all_up = now
                        if first_all_up is None:
                            first_all_up = now
                    elif now - last_all_up >= args.settle and at_storm_end is not None:
                        break
                elif last_all_up is not None:
                    dips += 1
                    last_all_up = None
                # The storm's loop lag: until all were up, and at least one probe interval after accepting (a
                # restart the sessions never noticed has its probes in the first interval).
                if at_storm_end is None and first_all_up is not None and now >= accepted_at + PROBE_INTERVAL:
                    at_storm_end = exporter.snapshot()
            time.sleep(0.1)
        after = exporter.snapshot()
    finally:
        gauges.stop()
        bouncer.stop()
        server.stop()
    recovered = last_all_up is not None and time.time() - last_all_up >= args.settle - 1
    figures = {
        "kind": args.kind,
        "accepted": accepted_at is not None,
        "first_drop_s": first_drop_s,
        "down_s": None if accepted_at is None else accepted_at - go_at,
        "first_all_up_s": None if first_all_up is None else first_all_up - accepted_at,
        "all_up_s": (last_all_up - accepted_at) if recovered else None,
        "up_at_end": up,
        "lowest_up": lowest,
        "dips": dips,
        "polls": polls,
        "lag": lag_window(before, at_storm_end or after),
        "lag_window_s": (at_storm_end or after)["time"] - before["time"],
        "timeouts": timeout_delta(before, after),
        "timeouts_after_accept": timeout_delta(at_accept, after) if at_accept else None,
        "probe_failures": reason_delta(before, after, "pgconn_probe_failures_total"),
        "connection_failures": reason_delta(before, after, "pgconn_connection_failures_total"),
        "login_failures": reason_delta(before, after, "pgconn_login_failures_total"),
        "disconnects": after["sums"]["pgconn_disconnects_total"] - before["sums"]["pgconn_disconnects_total"],
        "connection_attempts": after["sums"]["pgconn_connection_attempts_total"]
        - before["sums"]["pgconn_connection_attempts_total"],
        "exporter_connects_in_progress_max": gauges.maxima["pgconn_exporter_connects_in_progress"],
        "exporter_connects_waiting_max": gauges.maxima["pgconn_exporter_connects_waiting"],
        "overdue_max_s": gauges.maxima["pgconn_exporter_loop_overdue_seconds"],
        "gauge_scrapes": gauges.scrapes,
        **poller_figures(bouncer, server),
    }
    write(args.out, figures)
    print(json.dumps({k: figures[k] for k in ("down_s", "first_all_up_s", "all_up_s", "lowest_up", "timeouts")}))


# ---------------------------------------------------------------------------------------------------------------
# Report


def fmt_ms(v):
    return "-" if v is None else (f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms")


def fmt_s(v):
    return "not within the deadline" if v is None else f"{v:.2f} s"


def fmt_mb(v):
    return f"{v / 1e6:.1f} MB"


def fmt_n(v):
    return "-" if v is None else f"{v:.0f}"


def fmt_pct(v):
    return "-" if v is None else f"{100 * v:.2f} %"


def lag_text(lag):
    """p99 as the buckets allow: a bound when it lies in a bucket at or below 10 ms, else histogram_quantile's
    interpolation; then the shares over 10 and 100 ms, which the buckets give exactly."""
    if lag["p99_ms"] is None:
        return "no timers fired"
    low, high = lag["p99_bucket_ms"]
    if high is not None and high <= 10:
        p99 = f"<= {high:g} ms"
    elif high is not None:
        p99 = f"~{lag['p99_ms']:.0f} ms interpolated in {low:g}-{high:g} ms"
    else:
        p99 = f"> {low:g} ms"
    return (f"{p99}; {fmt_pct(lag['over_10ms'])} > 10 ms, {fmt_pct(lag['over_100ms'])} > 100 ms "
            f"of {lag['timers']:.0f} timers")


def lag_verdict(lag, goal_ms=20.0):
    """Decided by the buckets when they can (fewer than 1 % over 10 ms: met; 1 % or more over 100 ms: not met),
    else by the interpolated p99 (as histogram_quantile), and then says so."""
    if lag["p99_ms"] is None:
        return "-"
    if lag["over_10ms"] <= 0.01:
        return "met"
    if lag["over_100ms"] >= 0.01:
        return "not met"
    return ("met" if lag["p99_ms"] < goal_ms else "not met") + " (interpolated)"


def verdict(ok):
    return "met" if ok else "not met"


def timeouts_text(t):
    return " / ".join(f"{t[k]:.0f}" for k in ("probe", "connection", "login"))


def reasons_text(r):
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.items())) or "none"


def scrape_goal(n):
    if n <= 1000:
        return 20.0
    if n <= 5000:
        return 100.0
    return None


def cmd_report(args):
    d = args.dir
    load = {name: json.load(open(os.path.join(d, f"{name}.json")))
            for name in ("startup", "steady", "scrape", "bouncer", "server")
            if os.path.exists(os.path.join(d, f"{name}.json"))}
    n = args.targets
    rows = []

    def row(measure, value, goal="-", met="-"):
        rows.append((measure, value, goal, met))

    st = load.get("startup")
    if st:
        row("startup: exporter start to /-/ready", fmt_s(st["ready_s"]))
        row(f"startup: exporter start to all {n} up", fmt_s(st["all_up_s"]))
    s = load.get("steady")
    if s:
        w = f"{s['window_s']:.0f} s"
        row(f"steady ({w}): CPU of the exporter", f"{s['cpu_cores']:.3f} core "
            f"({1e6 * s['cpu_cores'] / n:.0f} µs/s a target)", "< 0.5 core", verdict(s["cpu_cores"] < 0.5))
        if "thread_cores" in s:
            tc = s["thread_cores"]
            per_login = tc["connect"] * s["window_s"] / s["login_checks"] if s["login_checks"] else 0
            row("steady: CPU by thread", f"loop {tc['loop']:.3f}, connect workers {tc['connect']:.3f} "
                f"({1e3 * per_login:.1f} ms a login check), HTTP {tc['http']:.3f}, other (page refresher, ...) "
                f"{tc['other']:.3f}")
            rest = s["cpu_cores"] - tc["connect"]
            row("steady: CPU apart from the login checks' connects", f"{rest:.3f} core", "< 0.5 core",
                verdict(rest < 0.5))
        # Sampled every second: a sample taken while the refresher renders the next page holds two pages and the
        # writer's buffer (100 MB more at 5,000 targets), so the median is the figure, min and max its range.
        row("steady: RSS (VmRSS median; min / max of 1 s samples)", f"{fmt_mb(s['rss_median'])}; "
            f"{fmt_mb(s['rss_min'])} / {fmt_mb(s['rss_max'])} ({s['rss_median'] / n / 1e3:.1f} kB a target)",
            "< 250 MB", verdict(s["rss_median"] < 250e6))
        row("steady: loop lag p99", lag_text(s["lag"]), "< 20 ms", lag_verdict(s["lag"]))
        row("steady: loop overdue max (at scrapes)", fmt_ms(1000 * s["overdue_max_s"]))
        ratio = s["probes"] / s["probes_expected"] if s["probes_expected"] else 0
        row("steady: probes on schedule", f"{s['probes']:.0f} of {s['probes_expected']:.0f} expected "
            f"({100 * ratio:.1f} %)", ">= 99 %", verdict(ratio >= 0.99))
        row("steady: login checks", f"{s['login_checks']:.0f} of ~{s['login_checks_expected']:.0f} expected")
        row("steady: probe failures / resets", f"{reasons_text(s['probe_failures'])} / {s['resets']:.0f}", "0",
            verdict(not s["probe_failures"] and not s["resets"]))
        row("steady: PgBouncer CPU; server backends max", f"{s['bouncer_cpu_cores']:.3f} core; "
            f"{fmt_n(s['server_backends_max'])}")
    sc = load.get("scrape")
    if sc:
        row("scrape: /metrics size (gzip) / series", f"{fmt_mb(sc['bytes'])} ({fmt_mb(sc['gzip_bytes'])}) / "
            f"{sc['series']}")
        goal = scrape_goal(n)
        row(f"scrape: {sc['count']} sequential GETs p50 / p99 / max",
            f"{sc['p50_ms']:.1f} / {sc['p99_ms']:.1f} / {sc['max_ms']:.1f} ms",
            "-" if goal is None else f"p99 < {goal:g} ms", "-" if goal is None else verdict(sc["p99_ms"] < goal))
        for key, label in (("wrk", "plain"), ("wrk_gzip", "gzip")):
            r = sc[key]
            if r is None:
                row(f"scrape: wrk -t2 -c10 {sc['wrk_seconds']}s ({label})", "wrk missing")
                continue
            errors = f", {r['timeouts']} timeouts" if r["timeouts"] else ""
            row(f"scrape: wrk -t2 -c10 {sc['wrk_seconds']}s ({label})",
                f"{r['rps']:.0f} req/s, p99 {fmt_ms(r['p99_ms'])}{errors}")
        row("RSS peak (VmHWM) after the scrapes", fmt_mb(sc["rss_peak"]), "< 250 MB",
            verdict(sc["rss_peak"] < 250e6))
    for key, title in (("bouncer", "PgBouncer restart"), ("server", "PostgreSQL restart")):
        r = load.get(key)
        if not r:
            continue
        first = "" if r["first_all_up_s"] is None or r["all_up_s"] is None or \
            abs(r["first_all_up_s"] - r["all_up_s"]) < 0.01 else f" (first all up {fmt_s(r['first_all_up_s'])})"
        row(f"{title}: accepting to all {n} up", fmt_s(r["all_up_s"]) + first, "< 10 s",
            verdict(r["all_up_s"] is not None and r["all_up_s"] < 10))
        row(f"{title}: lowest up seen; down for", f"{r['lowest_up']} of {n}; {fmt_s(r['down_s'])}")
        row(f"{title}: loop lag p99", lag_text(r["lag"]), "< 20 ms", lag_verdict(r["lag"]))
        row(f"{title}: loop overdue max (2 s polls)", fmt_ms(None if r["overdue_max_s"] is None
                                                            else 1000 * r["overdue_max_s"]))
        conc = (f"PgBouncer login_clients max {r['bouncer_login_clients_max']:.0f}"
                if r["bouncer_login_clients_max"] is not None else "PgBouncer login_clients -")
        conc += (f"; exporter connects_in_progress max {r['exporter_connects_in_progress_max']:.0f}, "
                 f"waiting max {r['exporter_connects_waiting_max']:.0f}"
                 if r["exporter_connects_in_progress_max"] is not None else "")
        row(f"{title}: connects at once", conc)
        backends = r["server_backends_max"]
        row(f"{title}: PostgreSQL backends max", "-" if backends is None else f"{backends:.0f}",
            f"<= pool ({args.pool_size})", "-" if backends is None else verdict(backends <= args.pool_size))
        after = r["timeouts_after_accept"]
        row(f"{title}: timeouts probe/connect/login", timeouts_text(r["timeouts"])
            + ("" if after is None else f" (after accepting: {timeouts_text(after)})"), "0",
            verdict(sum(r["timeouts"].values()) == 0))
    widths = [max(len(r[i]) for r in rows + [("measure", "value", "goal", "")]) for i in range(4)]

    def line(cells):
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    table = "\n".join([line(("measure", "value", "goal", "")), line(tuple("-" * w for w in widths))]
                      + [line(r) for r in rows])
    notes = []
    for key, title in (("bouncer", "PgBouncer restart"), ("server", "PostgreSQL restart")):
        r = load.get(key)
        if r:
            notes.append(
                f"- {title}: " + ("no target went down; " if r["first_drop_s"] is None else
                                  f"first target down {fmt_s(r['first_drop_s'])} after the stop; ") +
                f"loop lag over the first {r['lag_window_s']:.1f} s; "
                f"{r['disconnects']:.0f} disconnects, {r['connection_attempts']:.0f} session connects; "
                f"probe failures: {reasons_text(r['probe_failures'])}; connect failures: "
                f"{reasons_text(r['connection_failures'])}; login failures: {reasons_text(r['login_failures'])}; "
                f"{r['dips']} dips after all were up; PgBouncer used_clients max {fmt_n(r['bouncer_used_clients_max'])}, "
                f"used_servers max {fmt_n(r['bouncer_used_servers_max'])}"
                f"; polls: /health {r['polls']}, /metrics {r['gauge_scrapes']}, PgBouncer {r['bouncer_polls']} "
                f"({r['bouncer_failed_polls']} failed), PostgreSQL {r['server_polls']} ({r['server_failed_polls']} "
                "failed).")
    if s:
        notes.append(f"- Steady: {s['scrapes']} scrapes of /metrics in the window; connection failures: "
                     f"{reasons_text(s['connection_failures'])}; login failures: {reasons_text(s['login_failures'])};"
                     f" connects waiting max {s['waiting_max']:.0f}; targets up at the end {s['up_end']:.0f}.")
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write(table + "\n\n" + "\n".join(notes) + "\n")
    print(table)
    print()
    print("\n".join(notes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def exporter_args(p):
        p.add_argument("--address", required=True, help="host:port of the exporter")
        p.add_argument("--pid", type=int, required=True)
        p.add_argument("--targets", type=int, required=True)
        p.add_argument("--out", required=True)

    def poller_args(p):
        p.add_argument("--psql", required=True)
        p.add_argument("--passfile", required=True)
        p.add_argument("--bouncer-port", type=int, required=True)
        p.add_argument("--pg-socket", required=True)
        p.add_argument("--pg-port", type=int, required=True)

    p = sub.add_parser("startup")
    exporter_args(p)
    p.add_argument("--start", type=float, required=True, help="epoch of the exporter's start")
    p.add_argument("--timeout", type=float, required=True)
    p = sub.add_parser("steady")
    exporter_args(p)
    poller_args(p)
    p.add_argument("--bouncer-pid", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--scrape-every", type=float, default=15.0)
    p = sub.add_parser("scrape")
    exporter_args(p)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--wrk-seconds", type=int, default=5)
    p = sub.add_parser("storm")
    exporter_args(p)
    poller_args(p)
    p.add_argument("--kind", required=True)
    p.add_argument("--go-file", required=True)
    p.add_argument("--accepted-file", required=True)
    p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--settle", type=float, default=10.0)
    p = sub.add_parser("report")
    p.add_argument("--dir", required=True)
    p.add_argument("--targets", type=int, required=True)
    p.add_argument("--pool-size", type=int, required=True)
    args = parser.parse_args()
    globals()["cmd_" + args.command](args)


if __name__ == "__main__":
    main()
