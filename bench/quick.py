#!/usr/bin/env python3
"""Quick, targeted measurements of callgate alone (not part of the tests or
of bench/run.sh): one scenario of bench/run.sh with oha, or the
instructions callgate executes per request under callgrind.

    python3 bench/quick.py oha [--scenario 1|3|4] [--seconds 5] [--c 64] [--reps 1]
    python3 bench/quick.py callgrind [--scenario 1|3] [--n 2000] [--c 16]
    python3 bench/quick.py idle [--n 2000]

`oha`: req/s, p50/p99 (whole run, oha's own figures), callgate's CPU
microseconds per request, idle and peak RSS. `callgrind`: callgate runs
under valgrind; the counters are zeroed, oha sends N requests, then 2N on
new connections, and the difference of the two counts divided by N is the
cost of one request with connection set-up cancelled out. The annotated
profile of the 2N run is left in the work directory. `idle`: KiB of RSS per
idle keep-alive mutual-TLS connection (bench/idle_conns.py).

Needs a release build (`cargo build --release --bin callgate --example
upstream`). Uses ports 29001-29003, 29443 and 29901 on 127.0.0.1; every
process it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_seconds, status_kb, wait_http, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CALLGATE = ROOT / "target/release/callgate"
BIN = CALLGATE
UPSTREAM = ROOT / "target/release/examples/upstream"
BODY = ROOT / "bench/bodies/before-send-msg.json"
AFTER_BODY = ROOT / "bench/bodies/after-send-msg.json"
PORTS = {"UP_FAST": 29001, "UP_FAN2": 29002, "UP_FAN3": 29003, "UP_SILENT": 29009,
         "PORT_S1": 29443, "ADMIN": 29901}
APP = {1: 1400000001, 3: 1400000003, 4: 1400000001}


class Run:
    def __init__(self, work: Path):
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def start(self, name, argv, env=None, stdout=None):
        logf = open(self.work / f"{name}.log", "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                             stdout=stdout or logf, stderr=logf,
                             env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p, grace=30.0):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p, 5)


def setup(work: Path, run: Run, valgrind: list[str] | None = None):
    pki = work / "pki"
    subprocess.run([BIN, "certs", "--out", pki], check=True, capture_output=True)
    text = (ROOT / "bench/conf/callgate.yaml").read_text()
    # The never-answering upstream is not started here; no route of
    # scenarios 1 and 3 uses it.
    for k, v in {**PORTS, "PORT_S1": PORTS["PORT_S1"], "WORK": work, "PKI": pki}.items():
        text = text.replace("{{" + k + "}}", str(v))
    (work / "callgate.yaml").write_text(text)
    for name in ("UP_FAST", "UP_FAN2", "UP_FAN3"):
        run.start(name.lower(), [UPSTREAM, f"127.0.0.1:{PORTS[name]}"], stdout=subprocess.DEVNULL)
        wait_port(PORTS[name])
    argv = [BIN, "run", "-c", work / "callgate.yaml"]
    p = run.start("callgate", (valgrind or []) + argv,
                  env={"CALLGATE_THREADS": "2", "TOKIO_WORKER_THREADS": "2",
                       "RUST_LOG": "warn"})
    wait_http(f"http://127.0.0.1:{PORTS['ADMIN']}/readyz", timeout=120 if valgrind else 20)
    time.sleep(1.0)
    return p, pki


def oha(pki: Path, scenario: int, c: int, *, seconds=None, n=None, timeout="2s"):
    command, body = (("Group.CallbackAfterSendMsg", AFTER_BODY) if scenario == 4
                     else ("Group.CallbackBeforeSendMsg", BODY))
    url = (f"https://localhost:{PORTS['PORT_S1']}/im?SdkAppid={APP[scenario]}"
           f"&CallbackCommand={command}")
    argv = ["oha", "--no-tui", "--output-format", "json", "-c", str(c), "-t", timeout,
            "-m", "POST", "-D", str(body), "-H", "content-type: application/json",
            "--cert", str(pki / "client.pem"), "--key", str(pki / "client-key.pem"),
            "--cacert", str(pki / "ca.pem")]
    argv += ["-z", f"{seconds}s"] if seconds else ["-n", str(n)]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=3600, check=True)
    data = json.loads(out.stdout)
    statuses = data.get("statusCodeDistribution") or {}
    return data, sum(int(v) for v in statuses.values()), int(statuses.get("200", 0))


def cmd_oha(args, work, run):
    p, pki = setup(work, run)
    idle = status_kb(p.pid, "VmRSS")
    for rep in range(args.reps):
        cpu0 = cpu_seconds(p.pid)
        data, answered, ok = oha(pki, args.scenario, args.c, seconds=args.seconds)
        cpu = cpu_seconds(p.pid) - cpu0
        pct = data["latencyPercentiles"]
        print(f"s{args.scenario} c={args.c}: {data['summary']['requestsPerSec']:.0f} req/s "
              f"p50 {pct['p50'] * 1000:.2f} ms p99 {pct['p99'] * 1000:.2f} ms "
              f"ok {ok}/{answered} cpu {1e6 * cpu / max(answered, 1):.1f} us/req "
              f"idle {idle / 1024:.1f} MiB peak {status_kb(p.pid, 'VmHWM') / 1024:.1f} MiB "
              f"now {status_kb(p.pid, 'VmRSS') / 1024:.1f} MiB")
        if args.scenario == 4:
            # Notifications: the backlog left to deliver, and memory once done.
            print(f"  pending at the end: {pending()}")
            time.sleep(3.0)
            print(f"  3 s later: pending {pending()}, "
                  f"RSS {status_kb(p.pid, 'VmRSS') / 1024:.1f} MiB")


def pending() -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['ADMIN']}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("callgate_outbox_pending "):
                return line.split()[1]
    return "?"


def total_ir(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def cmd_callgrind(args, work, run):
    # Not next to the config: the config watcher would see every dump.
    (work / "cg").mkdir()
    out = work / "cg" / "cg.out"
    p, pki = setup(work, run, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                               "--dump-instr=no", "--collect-systime=no",
                               # Each dump self-contained: with compressed names a
                               # later dump refers to names defined in an earlier one.
                               "--compress-strings=no", "--compress-pos=no"])
    # Warm up (pools, lazy statics, allocator arenas).
    oha(pki, args.scenario, args.c, n=args.n // 2, timeout="60s")
    counts = []
    for n in (args.n, 2 * args.n):
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
        _, answered, ok = oha(pki, args.scenario, args.c, n=n, timeout="60s")
        assert ok == n, f"{ok} of {n} answered 200"
        subprocess.run(["callgrind_control", "-d", f"n{n}", str(p.pid)], check=True,
                       capture_output=True)
        time.sleep(1.0)
        dumps = sorted((work / "cg").glob("cg.out.*"), key=lambda f: f.stat().st_mtime)
        counts.append((n, total_ir(dumps[-1]), dumps[-1]))
    (n1, i1, _), (n2, i2, last) = counts
    print(f"s{args.scenario} c={args.c}: {i1 / n1:,.0f} Ir/req at n={n1} (incl. set-up), "
          f"{i2 / n2:,.0f} at n={n2}; difference: {(i2 - i1) / (n2 - n1):,.0f} Ir/req")
    ann = subprocess.run(["callgrind_annotate", "--inclusive=no", str(last)],
                         capture_output=True, text=True)
    (work / "annotate.txt").write_text(ann.stdout)
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(last)],
                         capture_output=True, text=True)
    (work / "annotate-inclusive.txt").write_text(ann.stdout)
    print(f"profile: {last}; annotated: {work}/annotate.txt, annotate-inclusive.txt")


def cmd_idle(args, work, run):
    dhat = ["valgrind", "--tool=dhat", f"--dhat-out-file={work}/dhat.json"] if args.dhat else None
    p, pki = setup(work, run, dhat)
    before = status_kb(p.pid, "VmRSS")
    argv = [sys.executable, ROOT / "bench/idle_conns.py", "--port", PORTS["PORT_S1"],
            "--n", args.n, "--body", BODY, "--ca", pki / "ca.pem",
            "--cert", pki / "client.pem", "--key", pki / "client-key.pem",
            "--path", f"/im?SdkAppid={APP[1]}&CallbackCommand=Group.CallbackBeforeSendMsg"]
    ic = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          start_new_session=True)
    run.procs.append(ic)
    line = ic.stdout.readline().decode().strip()
    time.sleep(2.0)
    after = status_kb(p.pid, "VmRSS")
    fields = dict(kv.split("=", 1) for kv in line.split()[1:])
    opened = int(fields.get("open", 0))
    print(f"idle: {line}; RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
          f"{(after - before) / max(opened, 1):.1f} KiB per connection")
    ic.stdin.close()
    if args.dhat:
        run.stop(p, 120)
        top_live_sites(work / "dhat.json", opened)


def top_live_sites(path: Path, conns: int):
    """The allocation sites holding the most memory at the heap's peak (all
    connections open), per connection, with the innermost frames that are
    not the allocator's own."""
    data = json.loads(path.read_text())
    frames = data["ftbl"]
    rows = []
    for pp in data["pps"]:
        if pp.get("gb", 0) == 0:
            continue
        names = [frames[i] for i in pp["fs"]]
        names = [n for n in names if not re.search(r"alloc::|__rust|malloc|realloc|RawVec|"
                                                   r"raw_vec|\bVec<|with_capacity|reserve", n)]
        rows.append((pp["gb"], pp["gbk"], " <- ".join(n.split(": ", 1)[-1][:90] for n in names[:4])))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"heap at peak: {total / 1024 / 1024:.1f} MiB, {total / max(conns, 1) / 1024:.1f} KiB per connection")
    for bytes_, blocks, where in rows[:25]:
        print(f"{bytes_ / max(conns, 1):8.0f} B/conn {blocks:7d} blocks  {where}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["oha", "callgrind", "idle"])
    ap.add_argument("--scenario", type=int, default=1, choices=[1, 3, 4])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--c", type=int, default=64)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--dhat", action="store_true", help="idle: heap profile under DHAT")
    ap.add_argument("--bin", default=str(CALLGATE), help="the callgate binary to measure")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.mode == "callgrind" and args.c == 64:
        args.c = 16
    global BIN
    BIN = Path(args.bin)
    work = Path(tempfile.mkdtemp(prefix="callgate-quick."))
    run = Run(work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        {"oha": cmd_oha, "callgrind": cmd_callgrind, "idle": cmd_idle}[args.mode](args, work, run)
    finally:
        run.stop_all()
        if args.keep or args.mode == "callgrind":
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
