"""`make bench-detect`: how fast pgconn_exporter, postgres_exporter and sql_exporter see faults, and how fast
pgconn_exporter is back after them (the performance issue's goal 4). Run by scripts/bench-detect.sh.

Everything runs in this one process so that each fault and each observation is stamped on the same monotonic
clock: a throwaway PostgreSQL (initdb in a temp dir, the server on a free 127.0.0.1 port, as the postgres OS user
when run as root), a pausable TCP proxy in front of it (paused, it forwards nothing either way and keeps its
sockets open: a host that drops packets), and the three exporters, each on a free port:
- pgconn_exporter with two targets, `direct` (to the server) and `proxied` (through the proxy), probe_interval
  1s, probe_timeout 500ms, the default backoff (250ms doubling to 5s, ±20%), login checks off;
- postgres_exporter (`pg_up`), and sql_exporter running `SELECT 1` every second
  (`sql_exporter_last_scrape_failed`).
pgconn_exporter is polled every 10 ms for the precise figures. Each exporter is also scraped once a second, at a
phase of its own, as a Prometheus would: "1 s scrapes" is when such a scrape first shows the fault.

Faults, each repeated RUNS times (the server and every exporter healthy before each):
- terminate: `pg_terminate_backend` of pgconn's sessions; from psql returning to the exporter's own time of the
  loss (the `up -> backoff` event in /api/v1/events, to the millisecond: "recorded"), and to
  `pgconn_disconnects_total` of `direct` going up on /metrics (which adds the age of the ready page, up to about
  0.2 s by design);
- shutdown: SIGINT to the postmaster (fast shutdown); from the signal to the loss recorded, and to the disconnect
  and `pgconn_up` 0 on /metrics; then the server is started again after SHORT_OUTAGE seconds (2; long enough for a 1 s scrape to
  see it down): from `pg_isready` first succeeding (polled every 10 ms) to `pgconn_up` 1;
- long outage: the same with the server kept down for LONG_OUTAGE seconds (past the 5 s backoff cap); also
  the connection attempts `direct` made while the server was down, against the backoff steps in that time;
- black hole: the proxy paused; to the loss recorded (its event time) and to `pgconn_up{target="proxied"}` 0 on
  /metrics (goal: probe_interval + probe_timeout); 2 s later resumed: to `pgconn_up` 1.
Results: a table on stdout and the block <!-- bench-detect begin --> ... <!-- bench-detect end --> in DOC.
Every wait has a deadline; every process started is stopped by PID (the server by its postmaster.pid) at exit.

Usage: bench_detect.py --pgconn BIN --pge BIN --sqle BIN --pg-bin DIR [--runs N] [--long-outage S] [--doc F]
"""
import argparse
import calendar
import http.client
import json
import os
import pwd
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

now = time.monotonic


def say(*parts):
    print("bench-detect:", *parts, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, condition, timeout, step=0.01):
    """Polls `condition` every `step` s until it returns a true value (returned), or raises after `timeout`."""
    deadline = now() + timeout
    while True:
        value = condition()
        if value:
            return value
        if now() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(step)


def get(port, path="/metrics", timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', re.M)


def samples(body, name, **labels):
    """Values of `name` whose labels include `labels`."""
    found = []
    for m in SAMPLE.finditer(body):
        if m.group(1) != name:
            continue
        text = m.group(2) or ""
        if all(f'{k}="{v}"' in text for k, v in labels.items()):
            found.append(float(m.group(3)))
    return found


def lost_at(port, target, since_wall):
    """Wall-clock time of the first `up -> backoff` session event of `target` recorded at or after `since_wall`
    (the event history keeps the exporter's own time of each change, to the millisecond), or None."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since_wall - 1)) + "Z"
    status, body = get(port, f"/api/v1/events?target={target}&since={stamp}")
    if status != 200:
        return None
    for event in json.loads(body).get("events", []):
        if event.get("kind") == "state" and event.get("from") == "up" and event.get("to") == "backoff":
            whole, _, fraction = event["time"].rstrip("Z").partition(".")
            at = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float("0." + (fraction or "0"))
            if at >= since_wall - 0.001:  # the history keeps milliseconds
                return at
    return None


# ---------------------------------------------------------------------------------------------------------------
# Processes


class Processes:
    def __init__(self):
        self.children = []  # (name, Popen)

    def start(self, name, argv, env=None, log=None, **kwargs):
        out = open(log, "ab") if log else subprocess.DEVNULL
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                **kwargs)
        self.children.append((name, proc))
        return proc

    def stop_all(self):
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    say(f"{name} (pid {proc.pid}) did not stop within 10s; SIGKILL")
                    proc.kill()
                    proc.wait(5)


class Server:
    """PostgreSQL in `work`, started and stopped by this benchmark (by the PID in postmaster.pid)."""

    def __init__(self, pg_bin, work, procs):
        self.pg_bin, self.work, self.procs = pg_bin, work, procs
        self.data, self.sockets, self.log = f"{work}/data", f"{work}/socket", f"{work}/server.log"
        self.port = free_port()
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def initdb(self):
        os.makedirs(self.sockets, mode=0o700)
        open(self.log, "a").close()
        if self.as_pg:
            pw = pwd.getpwnam("postgres")
            for path in (self.work, self.sockets, self.log):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        subprocess.run(self.as_pg + [f"{self.pg_bin}/initdb", "-D", self.data, "-U", "postgres",
                                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                     "--locale=C", "--no-sync"], check=True, stdout=subprocess.DEVNULL)

    def start(self):
        self.procs.start("postgres", ["setsid"] + self.as_pg + [
            f"{self.pg_bin}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.sockets,
            "-c", "listen_addresses=127.0.0.1"], log=self.log)
        return wait_for("PostgreSQL accepting connections", self.accepting, 30)

    def accepting(self):
        """pg_isready succeeded: the server accepts logins (not only TCP). Returns the time it was seen."""
        ok = subprocess.run([f"{self.pg_bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode
        return now() if ok == 0 else None

    def postmaster_pid(self):
        try:
            with open(f"{self.data}/postmaster.pid") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self, sig=signal.SIGINT):
        """Sends `sig` to the postmaster; returns the time it was sent, after which it waits for the exit."""
        pid = self.postmaster_pid()
        if pid is None:
            return now()
        sent = now()
        os.kill(pid, sig)
        wait_for("PostgreSQL stopping", lambda: not os.path.exists(f"/proc/{pid}"), 20)
        return sent

    def psql(self, sql):
        return subprocess.run(self.as_pg + [f"{self.pg_bin}/psql", "-X", "-q", "-At", "-h", self.sockets, "-p",
                                            str(self.port), "-U", "postgres", "-d", "postgres", "-c", sql],
                              check=True, capture_output=True, text=True).stdout.strip()

    def shutdown(self):
        pid = self.postmaster_pid()
        if pid and os.path.exists(f"/proc/{pid}"):
            try:
                self.stop()
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)


class PausableProxy:
    """Forwards 127.0.0.1:port to the server; paused, it moves no byte either way and keeps every socket open."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.paused = threading.Event()
        self.stopping = threading.Event()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.pump, args=(client,), daemon=True).start()

    def pump(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        peers = {client: upstream, upstream: client}
        try:
            while not self.stopping.is_set():
                if self.paused.is_set():
                    time.sleep(0.01)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for s in readable:
                    if self.paused.is_set():
                        break
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


class Scraper(threading.Thread):
    """Scrapes one exporter once a second at a random phase, like a Prometheus: (time, value) pairs."""

    def __init__(self, port, read):
        super().__init__(daemon=True)
        self.port, self.read = port, read
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        time.sleep(random.random())
        next_at = now()
        while not self.stopping.is_set():
            taken = now()
            try:
                _, body = get(self.port, timeout=1.0)
                self.samples.append((taken, self.read(body)))
            except OSError:
                self.samples.append((taken, None))
            next_at += 1.0
            time.sleep(max(0.0, next_at - now()))

    def first_after(self, t, predicate, within=30.0):
        """Seconds from `t` to the first scrape taken after it whose value satisfies `predicate`, or None."""
        for taken, value in list(self.samples):
            if t <= taken <= t + within and value is not None and predicate(value):
                return taken - t
        return None


# ---------------------------------------------------------------------------------------------------------------
# The benchmark


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * p // 100))  # nearest rank
    return ordered[int(rank) - 1]


def main():
    # A SIGTERM or SIGINT unwinds through the `finally` below, which stops every process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser()
    parser.add_argument("--pgconn", required=True)
    parser.add_argument("--pge", required=True)
    parser.add_argument("--sqle", required=True)
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--long-runs", type=int, default=None)
    parser.add_argument("--long-outage", type=float, default=12.0)
    parser.add_argument("--short-outage", type=float, default=2.0)
    parser.add_argument("--doc", default="")
    args = parser.parse_args()
    long_runs = args.long_runs if args.long_runs is not None else args.runs

    work = tempfile.mkdtemp(prefix="pgconn-bench-detect.")
    procs = Processes()
    server = Server(args.pg_bin, work, procs)
    scrapers = []
    try:
        say(f"PostgreSQL on 127.0.0.1:{server.port} in {work}")
        server.initdb()
        server.start()
        password = "bench-" + os.urandom(8).hex()
        server.psql(f"ALTER ROLE postgres PASSWORD '{password}'")
        proxy = PausableProxy(server.port)
        with open(f"{work}/password", "w") as f:
            f.write(password + "\n")
        os.chmod(f"{work}/password", 0o600)
        config = f"{work}/pgconn.yml"
        with open(config, "w") as f:
            f.write(f"""defaults:
  probe_interval: 1s
  probe_timeout: 500ms
  login_interval: 0
targets:
  - name: direct
    dsn: host=127.0.0.1 port={server.port} user=postgres dbname=postgres sslmode=disable
    password_file: {work}/password
  - name: proxied
    dsn: host=127.0.0.1 port={proxy.port} user=postgres dbname=postgres sslmode=disable
    password_file: {work}/password
""")
        pgconn_port, pge_port, sqle_port = free_port(), free_port(), free_port()
        pgconn = procs.start("pgconn_exporter", [args.pgconn, f"--config.file={config}",
                                                 f"--web.listen-address=127.0.0.1:{pgconn_port}", "--log.level=warn"],
                             log=f"{work}/pgconn.log")
        dsn = f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres?sslmode=disable"
        procs.start("postgres_exporter", [args.pge, f"--web.listen-address=127.0.0.1:{pge_port}",
                                          "--log.level=warn"], env={**os.environ, "DATA_SOURCE_NAME": dsn},
                    log=f"{work}/pge.log")
        with open(f"{work}/sqle.yml", "w") as f:
            f.write(f"""jobs:
- name: probe
  interval: '1s'
  connections:
  - '{dsn.replace("postgresql://", "postgres://", 1)}'
  queries:
  - name: probe_one
    help: "1 when SELECT 1 answered"
    values: [one]
    query: SELECT 1 AS one
""")
        procs.start("sql_exporter", [args.sqle, "-config.file", f"{work}/sqle.yml",
                                     "-web.listen-address", f"127.0.0.1:{sqle_port}"],
                    env={**os.environ, "LOGLEVEL": "error"}, log=f"{work}/sqle.log")

        def pgconn_body():
            if pgconn.poll() is not None:
                raise RuntimeError(f"pgconn_exporter exited (status {pgconn.returncode})")
            return get(pgconn_port, timeout=1.0)[1]

        def value(body, name, target):
            found = samples(body, name, target=target)
            return sum(found) if found else None

        def pgconn_up(target):
            return value(pgconn_body(), "pgconn_up", target)

        def pge_up(body):
            found = samples(body, "pg_up")
            return found[0] if found else None

        def sqle_up(body):
            found = samples(body, "sql_exporter_last_scrape_failed", query="probe_one")
            return (1.0 - found[0]) if found else None

        scraped = {
            "pgconn": Scraper(pgconn_port, lambda b: value(b, "pgconn_up", "direct")),
            "pgconn_proxied": Scraper(pgconn_port, lambda b: value(b, "pgconn_up", "proxied")),
            "pgconn_disconnects": Scraper(pgconn_port, lambda b: value(b, "pgconn_disconnects_total", "direct")),
            "postgres_exporter": Scraper(pge_port, pge_up),
            "sql_exporter": Scraper(sqle_port, sqle_up),
        }
        scrapers = list(scraped.values())

        def all_healthy():
            try:
                if pgconn_up("direct") != 1 or pgconn_up("proxied") != 1:
                    return False
                return pge_up(get(pge_port)[1]) == 1 and sqle_up(get(sqle_port)[1]) == 1
            except OSError:
                return False

        wait_for("every exporter healthy at the start", all_healthy, 60, step=0.1)
        for s in scrapers:
            s.start()
        time.sleep(2)  # a couple of 1 s scrapes before the first fault

        results = {k: [] for k in ("term_count", "term_event", "shut_event", "shut_count", "shut_down", "shut_back", "long_back",
                                   "long_attempts", "long_steps", "hole_down", "hole_event", "hole_back")}
        seen = {k: [] for k in ("term", "shut_count", "shut_down", "shut_back", "long_back", "hole_down", "hole_back")}

        pending = []  # (key, exporter, scraper, time, predicate): read once every run is over, so late scrapes count

        open_runs = []  # the entries of the run in progress, closed by `settle`

        def one_s(name, key, t, predicate, scraper=None):
            entry = [key, name, scraper or name, t, predicate, None]
            pending.append(entry)
            open_runs.append(entry)

        def settle():
            """Waits until everything is healthy again; a 1 s scrape only counts for the run it was taken in."""
            wait_for("every exporter healthy again", all_healthy, 60, step=0.05)
            time.sleep(1.2 + random.random())  # at least one 1 s scrape of each in the healthy state
            for entry in open_runs:
                entry[5] = now()
            open_runs.clear()

        say(f"terminate backend x{args.runs}")
        for _ in range(args.runs):
            before = value(pgconn_body(), "pgconn_disconnects_total", "direct")
            server.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'pgconn_exporter'")
            t, wall = now(), time.time()
            wait_for("the terminated session counted",
                     lambda: value(pgconn_body(), "pgconn_disconnects_total", "direct") > before, 10)
            results["term_count"].append(now() - t)
            results["term_event"].append(wait_for("the loss in the events", lambda: lost_at(
                pgconn_port, "direct", wall - 0.5), 5) - wall)
            time.sleep(1.5)
            one_s("pgconn", "term", t, lambda v, b=before: v > b, scraper="pgconn_disconnects")
            one_s("postgres_exporter", "term", t, lambda v: v == 0)
            one_s("sql_exporter", "term", t, lambda v: v == 0)
            settle()

        def shutdown_run(hold, event_key=None):
            """A fast shutdown, the server down for `hold` s, started again: the figures of one run."""
            before = value(pgconn_body(), "pgconn_disconnects_total", "direct")
            pid = server.postmaster_pid()
            t, wall = now(), time.time()
            os.kill(pid, signal.SIGINT)
            counted = wait_for("the shutdown counted", lambda: value(
                pgconn_body(), "pgconn_disconnects_total", "direct") > before and now(), 10)
            down = wait_for("pgconn_up 0", lambda: pgconn_up("direct") == 0 and now(), 10)
            wait_for("PostgreSQL stopped", lambda: not os.path.exists(f"/proc/{pid}"), 20)
            attempts0 = value(pgconn_body(), "pgconn_connection_attempts_total", "direct")
            stopped = now()
            if hold:
                time.sleep(max(0.0, hold - (stopped - t)))
            attempts1 = value(pgconn_body(), "pgconn_connection_attempts_total", "direct")
            accepting = server.start()
            back = wait_for("pgconn_up 1", lambda: pgconn_up("direct") == 1 and now(), 30)
            if event_key:
                lost = lost_at(pgconn_port, "direct", wall)
                results[event_key].append(None if lost is None else lost - wall)
            return t, counted - t, down - t, accepting, back - accepting, attempts1 - attempts0, now() - t

        say(f"fast shutdown, {args.short_outage:.0f} s down, start x{args.runs}")
        for _ in range(args.runs):
            before = value(pgconn_body(), "pgconn_disconnects_total", "direct")
            t, counted, down, accepting, back, _, _ = shutdown_run(args.short_outage, "shut_event")
            one_s("pgconn", "shut_count", t, lambda v, b=before: v > b, scraper="pgconn_disconnects")
            results["shut_count"].append(counted)
            results["shut_down"].append(down)
            results["shut_back"].append(back)
            time.sleep(1.5)
            for name in ("postgres_exporter", "sql_exporter"):
                one_s(name, "shut_down", t, lambda v: v == 0)
            for name in ("pgconn", "postgres_exporter", "sql_exporter"):
                one_s(name, "shut_back", accepting, lambda v: v == 1)
            settle()

        say(f"outage of {args.long_outage:.0f} s x{long_runs}")
        for _ in range(long_runs):
            t, _, _, accepting, back, attempts, _ = shutdown_run(args.long_outage)
            results["long_back"].append(back)
            results["long_attempts"].append(attempts)
            time.sleep(1.5)
            for name in ("pgconn", "postgres_exporter", "sql_exporter"):
                one_s(name, "long_back", accepting, lambda v: v == 1)
            settle()

        say(f"black hole x{args.runs}")
        for _ in range(args.runs):
            proxy.paused.set()
            t, wall = now(), time.time()
            wait_for("the proxied target down", lambda: pgconn_up("proxied") == 0, 10)
            results["hole_down"].append(now() - t)
            results["hole_event"].append(wait_for("the black hole in the events", lambda: lost_at(
                pgconn_port, "proxied", wall), 5) - wall)
            time.sleep(2)  # a host that stays away a while, so 1 s scrapes can see it too
            proxy.paused.clear()
            t2 = now()
            wait_for("the proxied target up", lambda: pgconn_up("proxied") == 1, 30)
            results["hole_back"].append(now() - t2)
            time.sleep(1.5)
            one_s("pgconn", "hole_down", t, lambda v: v == 0, scraper="pgconn_proxied")
            one_s("pgconn", "hole_back", t2, lambda v: v == 1, scraper="pgconn_proxied")
            settle()

        time.sleep(2)  # the last scrapes after the last fault
        for key, name, scraper, t, predicate, end in pending:
            seen[key].append((name, scraped[scraper].first_after(t, predicate, within=end - t)))
        report(args, results, seen, server, work)
    except BaseException:
        for log in ("pgconn.log", "pge.log", "sqle.log", "server.log"):
            try:
                lines = open(f"{work}/{log}", errors="replace").read().splitlines()[-10:]
            except OSError:
                continue
            if lines:
                say(f"last lines of {log}:")
                print("\n".join(lines), file=sys.stderr)
        raise
    finally:
        for s in scrapers:
            s.stopping.set()
        procs.stop_all()
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        say(f"stopped every process started; removed {work}")


def backoff_steps(seconds):
    """Reconnect attempts the default backoff (250ms doubling to 5s, before jitter) makes in `seconds`."""
    steps, elapsed, delay = 0, 0.0, 0.25
    while elapsed + delay <= seconds:
        elapsed += delay
        steps += 1
        delay = min(5.0, delay * 2)
    return steps


def report(args, results, seen, server, work):
    def ms(v):
        return "-" if v is None else f"{round(1000 * v):d} ms"  # round(): no "-0 ms"

    def dist(values):
        return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))} / {ms(max(values) if values else None)}"

    def one_s_text(key, name):
        values = [v for n, v in seen[key] if n == name]
        hits = [v for v in values if v is not None]
        if not hits:
            return "not seen"
        text = f"p50 {percentile(hits, 50):.1f} s, p99 {percentile(hits, 99):.1f} s"
        return text if len(hits) == len(values) else f"{text} ({len(values) - len(hits)} of {len(values)} not seen)"

    def verdict(ok):
        return "met" if ok else "not met"

    rows = []
    p99 = lambda k: percentile(results[k], 99)  # noqa: E731
    rows.append(("terminate: recorded by pgconn (its event time) p50 / p99 / max", dist(results["term_event"]),
                 "p99 < 100 ms", verdict(p99("term_event") < 0.1)))
    rows.append(("terminate: on /metrics (10 ms polls; page age included)", dist(results["term_count"]), "-", "-"))
    for name in ("pgconn", "postgres_exporter", "sql_exporter"):
        rows.append((f"terminate: seen by 1 s scrapes of {name}", one_s_text("term", name), "-", "-"))
    events = [v for v in results["shut_event"] if v is not None]
    rows.append(("shutdown: recorded by pgconn (its event time) p50 / p99 / max", dist(events), "p99 < 100 ms",
                 verdict(bool(events) and len(events) == len(results["shut_event"]) and percentile(events, 99) < 0.1)))
    rows.append(("shutdown: counted on /metrics (10 ms polls; page age included)", dist(results["shut_count"]), "-",
                 "-"))
    rows.append(("shutdown: pgconn_up 0 p50 / p99 / max", dist(results["shut_down"]), "-", "-"))
    rows.append(("shutdown: counted in 1 s scrapes of pgconn", one_s_text("shut_count", "pgconn"), "-", "-"))
    for name in ("postgres_exporter", "sql_exporter"):
        rows.append((f"shutdown: down in 1 s scrapes of {name}", one_s_text("shut_down", name), "-", "-"))
    rows.append((f"restart after {args.short_outage:.0f} s down: accepting to pgconn_up 1 p50 / p99 / max", dist(results["shut_back"]), "p99 < 1 s",
                 verdict(p99("shut_back") < 1.0)))
    for name in ("pgconn", "postgres_exporter", "sql_exporter"):
        rows.append((f"restart after {args.short_outage:.0f} s: up in 1 s scrapes of {name}", one_s_text("shut_back", name), "-", "-"))
    long_s = f"{args.long_outage:.0f} s outage"
    rows.append((f"{long_s}: accepting to pgconn_up 1 p50 / p99 / max", dist(results["long_back"]), "p99 < 1 s",
                 verdict(p99("long_back") < 1.0)))
    for name in ("pgconn", "postgres_exporter", "sql_exporter"):
        rows.append((f"{long_s}: up in 1 s scrapes of {name}", one_s_text("long_back", name), "-", "-"))
    steps = backoff_steps(args.long_outage)
    attempts = results["long_attempts"]
    rows.append((f"{long_s}: connection attempts while down", f"min {min(attempts):.0f}, max {max(attempts):.0f} "
                 f"(backoff steps in {args.long_outage:.0f} s: {steps})", f"<= {steps + 1}",
                 verdict(max(attempts) <= steps + 1)))
    rows.append(("black hole: recorded by pgconn (its event time) p50 / p99 / max", dist(results["hole_event"]),
                 "< interval + timeout (1.5 s)", verdict(p99("hole_event") < 1.5)))
    rows.append(("black hole: pgconn_up 0 on /metrics p50 / p99 / max", dist(results["hole_down"]),
                 "< interval + timeout (1.5 s)", verdict(p99("hole_down") < 1.5)))
    rows.append(("black hole: pgconn_up 0 in 1 s scrapes", one_s_text("hole_down", "pgconn"), "-", "-"))
    rows.append(("black hole ends: pgconn_up 1 in 1 s scrapes", one_s_text("hole_back", "pgconn"), "-", "-"))
    rows.append(("black hole ends: pgconn_up 1 p50 / p99 / max", dist(results["hole_back"]), "-", "-"))

    widths = [max(len(r[i]) for r in rows + [("measure", "value", "goal", "")]) for i in range(4)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    table = [line(("measure", "value", "goal", "")), line(tuple("-" * w for w in widths))]
    table += [line(r) for r in rows]
    versions = []
    for argv in ([args.pgconn, "--version"], [args.pge, "--version"], [f"{args.pg_bin}/postgres", "--version"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            versions.append((out.stdout or out.stderr).splitlines()[0].strip())
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = open("/proc/loadavg").read().split()[:3]
    header = (f"### Detection and recovery ({stamp})\n\n"
              f"{len(results['term_count'])} runs of each fault ({len(results['long_back'])} of the long outage); "
              f"pgconn_exporter probe_interval 1s, probe_timeout 500ms, default backoff; "
              f"load average before the report {' '.join(load)}; {'; '.join(versions)}.\n")
    text = header + "\n" + "\n".join(table) + "\n"
    print(text)
    if args.doc:
        block = f"<!-- bench-detect begin -->\n{text}<!-- bench-detect end -->"
        try:
            doc = open(args.doc).read()
        except OSError:
            doc = "# Benchmarks\n\n<!-- bench:results -->\n"
        pattern = re.compile(r"<!-- bench-detect begin -->.*?<!-- bench-detect end -->", re.S)
        if pattern.search(doc):
            doc = pattern.sub(lambda _: block, doc)
        elif "<!-- bench:results -->" in doc:
            doc = doc.replace("<!-- bench:results -->", block + "\n\n<!-- bench:results -->")
        else:
            doc += "\n" + block + "\n"
        with open(args.doc, "w") as f:
            f.write(doc)
        say(f"recorded in {args.doc}")


if __name__ == "__main__":
    main()
