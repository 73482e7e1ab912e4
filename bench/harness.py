#!/usr/bin/env python3
"""Runs the benchmark scenarios for callgate, Envoy, nginx and the
direct-to-upstream baseline and writes every run's figures as JSON.
Started by bench/run.sh, which installs the tools, builds callgate and makes
the PKI first; see bench/README.md.

    python3 bench/harness.py --work DIR --pki DIR --reps N --seconds S --out FILE

Every process it starts is recorded (pid per line) in WORK/pids so that
run.sh's EXIT trap can end them even if this script is killed; this script
ends them itself (SIGTERM, then SIGKILL of the process group) when done.
All traffic goes to 127.0.0.1 / localhost; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CALLGATE = ROOT / "target/release/callgate"
UPSTREAM = ROOT / "target/release/examples/upstream"

PORTS = {
    "UP_FAST": 28001,
    "UP_FAN2": 28002,
    "UP_FAN3": 28003,
    "UP_SILENT": 28009,
    "PORT_S1": 28443,
    "PORT_S2": 28444,
    "PORT_S3": 28445,
    "ADMIN": 28901,
}
WORKERS = 2
BEFORE = "Group.CallbackBeforeSendMsg"
AFTER = "Group.CallbackAfterSendMsg"
CONTESTANTS = ["callgate", "envoy", "nginx", "direct"]
CLIENT_TIMEOUT = "2s"  # IM stops waiting for an answer after 2 s
WARMUP = 1.0  # seconds of each load run left out of req/s and latencies


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- processes


class Procs:
    def __init__(self, work: Path):
        self.work = work
        self.pidfile = work / "pids"
        self.live: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict | None = None,
              stdin=subprocess.DEVNULL, stdout=None) -> subprocess.Popen:
        logf = open(self.work / f"{name}.log", "ab")
        p = subprocess.Popen(
            [str(a) for a in argv],
            stdin=stdin,
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        self.live[name] = p
        return p

    def stop(self, name: str, grace: float = 12.0) -> None:
        p = self.live.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything left in its group
        except ProcessLookupError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            log(f"warning: {name} (pid {p.pid}) did not exit")

    def stop_all(self) -> None:
        for name in list(self.live):
            self.stop(name)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 20.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def http_get(url: str, timeout: float = 5.0) -> str:
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url: str, timeout: float = 20.0) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        try:
            http_get(url, 1.0)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx: master and workers)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid: int, field: str) -> int:
    """Sum of a /proc/PID/status field (kB) over the process tree."""
    total = 0
    for p in proc_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of the process tree."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in proc_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / ticks


def steady_state(db: Path, seconds: float) -> dict:
    """req/s and latency percentiles from oha's per-request records, leaving
    out the first WARMUP seconds: at c=200 the connections' TLS handshakes
    otherwise make up the whole p99."""
    empty = {"rps": 0.0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "steady_n": 0}
    if not db.exists():
        return empty
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT start, end, duration FROM oha").fetchall()
    finally:
        con.close()
    # Little's law, L = rate x latency: the mean number of requests in
    # flight during the window over their mean latency. Counting answers in
    # the window instead is exact only for whole closed-loop rounds: when
    # every request takes the 300 ms deadline, the window holds 29 or 30
    # rounds of 200 depending on where they fall (a 3 % step).
    window = max(seconds - WARMUP, 0.001)
    in_flight = sum(max(0.0, min(end, seconds) - max(start, WARMUP)) for start, end, _ in rows)
    in_flight /= window
    lat = sorted(d for start, _, d in rows if start >= WARMUP)
    if not lat:
        return empty

    def pct(p: float) -> float:
        # nearest rank
        i = min(len(lat) - 1, max(0, int(-(-p * len(lat) // 1)) - 1))
        return round(lat[i] * 1000, 3)

    mean = sum(lat) / len(lat)
    return {"rps": round(in_flight / mean, 1) if mean > 0 else 0.0, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "p999_ms": pct(0.999), "steady_n": len(lat)}


def established_to(port: int) -> int | None:
    """Established TCP connections whose local (server) port is `port`."""
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(1 for line in out.stdout.splitlines() if line.strip())


# --------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        self.pki = Path(args.pki)
        self.procs = Procs(self.work)
        self.seconds = args.seconds
        self.runs: list[dict] = []
        self.bodies = {
            BEFORE: BENCH / "bodies/before-send-msg.json",
            AFTER: BENCH / "bodies/after-send-msg.json",
        }
        self.envoy_bin = args.envoy
        self.oha_bin = args.oha
        self.proxy_pid: int | None = None
        self.oha_wait_flag = "--wait-ongoing-requests-after-deadline" in subprocess.run(
            [self.oha_bin, "--help"], capture_output=True, text=True, timeout=30
        ).stdout
        busy = [p for p in PORTS.values() if port_open(p)]
        if busy:
            raise SystemExit(f"bench: ports already in use on 127.0.0.1: {busy}")
        subst = {**PORTS, "WORK": str(self.work), "PKI": str(self.pki)}
        for name in ("callgate.yaml", "envoy.yaml", "nginx.conf"):
            text = (BENCH / "conf" / name).read_text()
            for k, v in subst.items():
                text = text.replace("{{" + k + "}}", str(v))
            assert not re.search(r"\{\{[A-Z_0-9]+\}\}", text), f"unfilled placeholder in {name}"
            (self.work / name).write_text(text)
        (self.work / "nginx-tmp").mkdir(exist_ok=True)

    # ---- upstreams

    def start_upstreams(self) -> None:
        for name, port in (("fast", "UP_FAST"), ("fan2", "UP_FAN2"), ("fan3", "UP_FAN3")):
            # The demo upstream prints every callback: send that to /dev/null.
            self.procs.start(f"up-{name}", [UPSTREAM, f"127.0.0.1:{PORTS[port]}"],
                             stdout=subprocess.DEVNULL)
        self.procs.start("up-silent", [sys.executable, BENCH / "blackhole.py", PORTS["UP_SILENT"]])
        for port in ("UP_FAST", "UP_FAN2", "UP_FAN3", "UP_SILENT"):
            wait_port(PORTS[port])

    def stop_upstreams(self) -> None:
        for name in ("up-fast", "up-fan2", "up-fan3", "up-silent"):
            self.procs.stop(name, grace=3)

    # ---- proxies

    def start_proxy(self, who: str) -> int:
        """Starts the proxy; returns the pid whose process tree is measured."""
        if who == "direct":
            return self.procs.live["up-fast"].pid
        if who == "callgate":
            import shutil
            shutil.rmtree(self.work / "outbox", ignore_errors=True)
            p = self.procs.start(
                "callgate",
                [CALLGATE, "run", "-c", self.work / "callgate.yaml"],
                # Serving threads, and the workers of the runtime that
                # accepts, reloads and schedules deliveries.
                env={"CALLGATE_THREADS": str(WORKERS), "TOKIO_WORKER_THREADS": str(WORKERS),
                     "RUST_LOG": "warn"},
            )
            wait_http(f"http://127.0.0.1:{PORTS['ADMIN']}/readyz")
        elif who == "envoy":
            p = self.procs.start(
                "envoy",
                [self.envoy_bin, "-c", self.work / "envoy.yaml", "--concurrency", WORKERS,
                 "--log-level", "warn", "--disable-hot-restart",
                 "--file-flush-interval-msec", "100"],
            )
            wait_http(f"http://127.0.0.1:{PORTS['ADMIN']}/ready", timeout=30)
        elif who == "nginx":
            p = self.procs.start(
                "nginx",
                ["nginx", "-c", self.work / "nginx.conf", "-p", self.work / "nginx-tmp",
                 "-e", self.work / "nginx-error.log"],
            )
        else:
            raise ValueError(who)
        for port in ("PORT_S1", "PORT_S2", "PORT_S3"):
            if who == "callgate" and port != "PORT_S1":
                continue
            wait_port(PORTS[port])
        time.sleep(1.0)  # let start-up work settle before the idle reading
        if p.poll() is not None:
            raise RuntimeError(f"{who} exited with {p.returncode}; see {self.work}/{who}.log")
        return p.pid

    def stop_proxy(self, who: str) -> None:
        if who != "direct":
            self.procs.stop(who)

    # ---- addresses

    def url(self, who: str, scenario: int, command: str = BEFORE) -> str:
        app = {1: 1400000001, 2: 1400000002, 3: 1400000003, 4: 1400000001}[scenario]
        query = f"SdkAppid={app}&CallbackCommand={command}"
        if who == "direct":
            port = PORTS["UP_SILENT"] if scenario == 2 else PORTS["UP_FAST"]
            return f"http://127.0.0.1:{port}/im?{query}"
        port = PORTS["PORT_S1"]
        if who != "callgate":
            port = PORTS[{1: "PORT_S1", 2: "PORT_S2", 3: "PORT_S3", 4: "PORT_S1"}[scenario]]
        return f"https://localhost:{port}/im?{query}"

    # ---- fallback counters

    def fallbacks(self, who: str) -> int | None:
        if who == "callgate":
            text = http_get(f"http://127.0.0.1:{PORTS['ADMIN']}/metrics")
            return int(sum(float(m.group(1)) for m in re.finditer(
                r"^callgate_fallbacks_total\{[^}]*\} (\S+)$", text, re.M)))
        path = {"envoy": "envoy-fallbacks.log", "nginx": "nginx-fallbacks.log"}.get(who)
        if path is None:
            return None
        try:
            with open(self.work / path, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def settled_fallbacks(self, who: str) -> int | None:
        """The fallback count once it stops moving (log files are flushed
        on a timer), waiting at most 5 s."""
        last = self.fallbacks(who)
        if who not in ("envoy", "nginx"):
            return last
        until = time.monotonic() + 5
        while time.monotonic() < until:
            time.sleep(0.5)
            now = self.fallbacks(who)
            if now == last:
                return now
            last = now
        return last

    # ---- one load run

    def oha(self, who: str, scenario: int, concurrency: int, command: str = BEFORE) -> dict:
        url = self.url(who, scenario, command)
        argv = [self.oha_bin, "--no-tui", "--output-format", "json",
                "-c", concurrency, "-z", f"{self.seconds}s", "-t", CLIENT_TIMEOUT,
                "-m", "POST", "-D", self.bodies[command],
                "-H", "content-type: application/json"]
        if self.oha_wait_flag:
            argv.append("--wait-ongoing-requests-after-deadline")
        if url.startswith("https://"):
            argv += ["--cert", self.pki / "client.pem", "--key", self.pki / "client-key.pem",
                     "--cacert", self.pki / "ca.pem"]
        self.db_seq = getattr(self, "db_seq", 0) + 1
        db = self.work / f"oha-{self.db_seq}.db"
        argv += ["--db-url", db, url]
        fb0 = self.fallbacks(who)
        cpu0 = cpu_seconds(self.proxy_pid)
        started = time.monotonic()
        out = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                             timeout=self.seconds + 60)
        if out.returncode != 0:
            raise RuntimeError(f"oha failed ({out.returncode}): {out.stderr[-2000:]}")
        wall = time.monotonic() - started
        cpu = cpu_seconds(self.proxy_pid) - cpu0
        rss_kb = status_kb(self.proxy_pid, "VmRSS")
        fb1 = self.settled_fallbacks(who)
        data = json.loads(out.stdout)
        summary = data.get("summary", {})
        statuses = {str(k): int(v) for k, v in (data.get("statusCodeDistribution") or {}).items()}
        errors = {str(k): int(v) for k, v in (data.get("errorDistribution") or {}).items()}
        answered = sum(statuses.values())
        attempted = answered + sum(errors.values())
        ok = statuses.get("200", 0)
        pct = data.get("latencyPercentiles") or {}
        elapsed = float(summary.get("total") or wall)

        def ms(key):
            v = pct.get(key)
            return None if v is None or answered == 0 else round(float(v) * 1000, 3)

        fallbacks = None if fb0 is None or fb1 is None else fb1 - fb0
        steady = steady_state(db, self.seconds)
        db.unlink(missing_ok=True)
        return {
            **steady,
            "oha_rps": round(answered / elapsed, 1) if elapsed else 0.0,
            "oha_p50_ms": ms("p50"),
            "oha_p99_ms": ms("p99"),
            "oha_p999_ms": ms("p99.9"),
            "answered": answered,
            "attempted": attempted,
            "statuses": statuses,
            "errors": errors,
            "seconds": round(elapsed, 3),
            "ok_rps": round(ok / elapsed, 1) if elapsed else 0.0,
            "success_pct": round(100.0 * ok / attempted, 3) if attempted else 0.0,
            "fallbacks": fallbacks,
            "fallback_pct": (round(100.0 * fallbacks / answered, 3)
                             if fallbacks is not None and answered else None),
            "rss_kb": rss_kb,
            "cpu_s": round(cpu, 3),
            "cpu_us_per_req": round(1e6 * cpu / answered, 1) if answered else None,
        }

    def record(self, rep: int, who: str, scenario: int, figures: dict, **extra) -> None:
        row = {"rep": rep, "who": who, "scenario": scenario, **figures, **extra}
        self.runs.append(row)
        keys = ("rps", "p50_ms", "p99_ms", "success_pct", "fallback_pct", "rss_kb",
                "cpu_us_per_req", "idle_rss_kb", "peak_rss_kb", "established_at_reading")
        short = {k: row[k] for k in keys if row.get(k) is not None}
        log(f"  rep {rep} {who:8} s{scenario}: {short}")
        self.save()

    def na(self, rep: int, who: str, scenario: int, why: str) -> None:
        self.runs.append({"rep": rep, "who": who, "scenario": scenario, "na": why})

    def save(self) -> None:
        tmp = Path(self.args.out + ".tmp")
        tmp.write_text(json.dumps({"runs": self.runs, "meta": self.meta}, indent=1))
        tmp.replace(self.args.out)

    # ---- scenarios for one contestant

    def block(self, rep: int, who: str) -> None:
        log(f"rep {rep}: {who}")
        self.start_upstreams()
        try:
            self.proxy_pid = self.start_proxy(who)
            idle_kb = status_kb(self.proxy_pid, "VmRSS")

            # (1) decision, one fast upstream, c=64
            r1 = self.oha(who, 1, 64)
            peak_kb = status_kb(self.proxy_pid, "VmHWM")
            self.record(rep, who, 1, r1)
            # (5) idle RSS and peak RSS under (1)
            self.record(rep, who, 5, {"idle_rss_kb": idle_kb, "peak_rss_kb": peak_kb})

            # (2) never-answering upstream, 300 ms deadline, c=200
            r2 = self.oha(who, 2, 200)
            if who == "direct":
                r2["note"] = "no proxy: every request waits for IM's 2 s timeout"
            self.record(rep, who, 2, r2)

            # (3) decision fan-out to 3 upstreams, c=64
            if who == "direct":
                self.na(rep, who, 3, "no fan-out without a proxy")
            else:
                self.record(rep, who, 3, self.oha(who, 3, 64),
                            mode="fan-out, strictest" if who == "callgate" else "mirror x2")

            # (4) notifications acknowledged per second (durable outbox)
            if who in ("callgate", "direct"):
                r4 = self.oha(who, 4, 64, AFTER)
                if who == "callgate":
                    r4.update(self.drain_outbox(r4["answered"]))
                self.record(rep, who, 4, r4)
            else:
                self.na(rep, who, 4, "no outbox")
        finally:
            self.stop_proxy(who)
            self.stop_upstreams()

        # (6) 10,000 idle keep-alive connections, on a fresh process
        self.start_upstreams()
        try:
            self.proxy_pid = self.start_proxy(who)
            self.record(rep, who, 6, self.idle_connections(who))
        finally:
            self.stop_proxy(who)
            self.stop_upstreams()

    def drain_outbox(self, acknowledged: int) -> dict:
        """Waits (bounded) until every acknowledged notification is delivered."""
        started = time.monotonic()
        delivered = pending = None
        while time.monotonic() - started < 60:
            text = http_get(f"http://127.0.0.1:{PORTS['ADMIN']}/metrics")
            pending = sum(float(m.group(1)) for m in re.finditer(
                r"^callgate_outbox_pending(?:\{[^}]*\})? (\S+)$", text, re.M))
            delivered = sum(float(m.group(1)) for m in re.finditer(
                r'^callgate_deliveries_total\{[^}]*result="delivered"[^}]*\} (\S+)$', text, re.M))
            if pending == 0:
                break
            time.sleep(0.5)
        return {"delivered": int(delivered or 0), "pending_after": int(pending or 0),
                "drain_s": round(time.monotonic() - started, 1)}

    def idle_connections(self, who: str) -> dict:
        n = self.args.idle_conns
        before_kb = status_kb(self.proxy_pid, "VmRSS")
        url = self.url(who, 1)
        port = int(re.match(r"\w+://[^:]+:(\d+)", url).group(1))
        path = url.split(str(port), 1)[1]
        argv = [sys.executable, BENCH / "idle_conns.py", "--port", port, "--n", n,
                "--path", path, "--body", self.bodies[BEFORE]]
        if url.startswith("https://"):
            argv += ["--ca", self.pki / "ca.pem", "--cert", self.pki / "client.pem",
                     "--key", self.pki / "client-key.pem"]
        p = self.procs.start("idle-conns", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = ""
        try:
            import select
            until = time.monotonic() + 300
            while time.monotonic() < until and p.poll() is None:
                ready, _, _ = select.select([p.stdout], [], [], 1.0)
                if ready:
                    line = p.stdout.readline().decode().strip()
                    if line.startswith("ready"):
                        break
            if not line.startswith("ready"):
                raise RuntimeError(f"idle_conns.py gave no ready line (got {line!r})")
            time.sleep(2.0)
            rss_kb = status_kb(self.proxy_pid, "VmRSS")
            established = established_to(port)
            fields = dict(kv.split("=", 1) for kv in line.split()[1:])
            p.stdin.close()
            closing = p.stdout.readline().decode().strip()  # "closing alive=N"
            alive = int(closing.split("alive=")[1]) if "alive=" in closing else None
        finally:
            self.procs.stop("idle-conns", grace=10)
        return {
            "connections": int(fields["open"]),
            "failed": int(fields["failed"]),
            "errors_detail": fields.get("errors"),
            "open_seconds": float(fields["seconds"]),
            "still_open": alive,
            "established_at_reading": established,
            "rss_before_kb": before_kb,
            "rss_kb": rss_kb,
            "kb_per_conn": round((rss_kb - before_kb) / max(1, int(fields["open"])), 2),
        }

    def run(self) -> None:
        self.meta = {"reps": self.args.reps, "seconds": self.seconds, "workers": WORKERS,
                     "idle_conns": self.args.idle_conns, "client_timeout": CLIENT_TIMEOUT, "warmup": WARMUP,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "orders": [],
                     "loadavg_start": Path("/proc/loadavg").read_text().split()[:3]}
        only = [c for c in CONTESTANTS if not self.args.only or c in self.args.only.split(",")]
        for rep in range(self.args.reps):
            # Alternate the order: rotate by one each repetition, reverse every other one.
            order = only[rep % len(only):] + only[:rep % len(only)]
            if rep % 2:
                order.reverse()
            self.meta["orders"].append(order)
            for who in order:
                try:
                    self.block(rep, who)
                except Exception as e:  # noqa: BLE001 - one broken block must not lose the rest
                    log(f"rep {rep} {who}: FAILED: {e}")
                    self.runs.append({"rep": rep, "who": who, "scenario": 0, "error": str(e)})
                    self.save()
        self.meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        self.save()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--pki", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--oha", default="oha")
    ap.add_argument("--envoy", default="envoy")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(CONTESTANTS))
    args = ap.parse_args()
    # SIGTERM (run.sh's cleanup, or anyone) ends the run through the finally
    # below, which stops every process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.procs.stop_all()
    failed = [r for r in bench.runs if r.get("error")]
    if failed:
        log(f"{len(failed)} block(s) failed; see the logs in {args.work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
