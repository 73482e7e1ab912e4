#!/usr/bin/env python3
"""Turns bench/harness.py's results (JSON) into BENCHMARKS.md: date,
machine, versions, the table of medians with ratios to Envoy, the notes.

    python3 bench/report.py --results FILE --out BENCHMARKS.md \\
        --oha PATH --envoy PATH [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROXIES = ["callgate", "envoy", "nginx", "direct"]
NAMES = {"callgate": "callgate", "envoy": "Envoy", "nginx": "nginx", "direct": "direct (no proxy)"}
SCENARIOS = {
    1: "(1) decision, 1 fast upstream, c=64",
    2: "(2) never-answering upstream, 300 ms deadline, c=200",
    3: "(3) decision to 3 upstreams, c=64",
    4: "(4) notifications, durable outbox, c=64",
    5: "(5) RSS idle / peak under (1)",
    6: "(6) 10,000 idle keep-alive mTLS connections",
}


def sh(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"


def machine() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    os_name = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem_kb / 1024 / 1024,
            "os": os_name, "kernel": platform.release()}


def versions(oha: str, envoy: str) -> dict:
    rev = sh(["git", "rev-parse", "--short", "HEAD"])
    if sh(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml",
           "Cargo.lock"]):
        rev += " (with uncommitted changes in src/)"
    envoy_v = sh([envoy, "--version"]).split("version:")[-1].strip()
    return {
        "callgate": rev,
        "envoy": envoy_v,
        "nginx": sh(["nginx", "-v"]).replace("nginx version: ", ""),
        "oha": sh([oha, "--version"]),
        "rustc": sh(["rustc", "--version"]),
        "python": platform.python_version(),
    }


def median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0, suffix=""):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}{suffix}"
    return f"{v:,.{digits}f}{suffix}"


def ratio(v, ref):
    if v is None or ref in (None, 0):
        return "—"
    return f"{v / ref:.2f}×"


def mib(kb):
    return None if kb is None else kb / 1024


def build(results: dict, mach: dict, vers: dict, quick: bool) -> str:
    runs = results["runs"]
    meta = results["meta"]
    by: dict[tuple[int, str], list[dict]] = {}
    for r in runs:
        by.setdefault((r["scenario"], r["who"]), []).append(r)

    def cell(s, who):
        rows = by.get((s, who), [])
        live = [r for r in rows if "na" not in r]
        return live, (rows[0]["na"] if rows and not live else None)

    out = []
    out.append("# Benchmarks\n")
    out.append(
        "callgate against Envoy and nginx configured to do the same job, and against "
        "the upstream alone, on one machine. Produced by `bash bench/run.sh"
        + (" --quick" if quick else "") + "` (see the README's *Benchmarks* section); "
        "every figure is the **median of "
        f"{meta['reps']} repetition{'s' if meta['reps'] != 1 else ''}** of "
        f"{meta['seconds']} s per load run, with the order of the proxies alternated "
        "between repetitions.\n")
    if quick:
        out.append("> **Quick run** (`--quick`: 1 repetition, 5 s per run): a check that the "
                   "harness works, not a measurement to quote.\n")
    out.append("## Run\n")
    out.append(f"- Date: {meta['started']} to {meta.get('finished', '(unfinished)')}")
    out.append(f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), "
               f"{mach['mem_gib']:.1f} GiB memory, {mach['os']}, kernel {mach['kernel']}")
    la0 = " ".join(meta.get("loadavg_start", []))
    la1 = " ".join(meta.get("loadavg_end", []))
    out.append(f"- Load average (1/5/15 min) at start: {la0}; at end: {la1}. The load "
               "tool, the proxy and the upstreams all share these CPUs, and anything else "
               "running on the machine skews the figures.")
    out.append(f"- Versions: callgate {vers['callgate']} (release build, {vers['rustc']}); "
               f"Envoy {vers['envoy']}; nginx {vers['nginx']}; {vers['oha']}; "
               f"Python {vers['python']}")
    out.append(f"- Every proxy with {meta['workers']} workers: callgate "
               f"`CALLGATE_THREADS={meta['workers']}` (serving threads; its runtime for "
               f"accepting, admin and the delivery scheduler has as many workers), "
               f"Envoy `--concurrency "
               f"{meta['workers']}`, nginx `worker_processes {meta['workers']}`.")
    out.append("- Order of the proxies per repetition: "
               + "; ".join(", ".join(o) for o in meta.get("orders", [])) + "\n")

    out.append("## Results\n")
    out.append("Latencies in milliseconds, as oha measures them at the client (over mutual "
               "TLS; direct runs are plain HTTP to the upstream). Latencies and *req/s* "
               f"leave out the first {meta.get('warmup', 1.0):g} s of each run (connection "
               "set-up: at c=200 the TLS handshakes alone would make the p99); oha's own "
               "whole-run figures are in `target/bench/results.json`. *req/s* is the mean "
               "number of requests in flight over their mean latency (Little's law, exact for a "
               "closed loop in a steady state): in scenario 2 every request takes the "
               "deadline, and answers counted in a fixed window would be 29 or 30 rounds "
               "of 200 depending on where the rounds fall (a 3 % step that says nothing "
               "of the proxy); *success %* is the share of requests answered 200; "
               "*fallback %* "
               "the share of answers the proxy made up itself because the upstream did not "
               "answer in time (or failed). *RSS* is the proxy's resident memory (all its "
               "processes) at the end of the run, or as the row says. *CPU/req* is the "
               "proxy's own CPU time (user+system) per answer. Ratios are to Envoy's "
               "figure in the same scenario: above 1× is more req/s, a slower p99 or more "
               "memory.\n")
    out.append("| scenario | proxy | req/s | p50 | p99 | p99.9 | success % | fallback % "
               "| RSS MiB | CPU µs/req | req/s ÷ Envoy | p99 ÷ Envoy | RSS ÷ Envoy |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for s in (1, 2, 3, 4):
        env_live, _ = cell(s, "envoy")
        e_rps, e_p99, e_rss = (median(env_live, "rps"), median(env_live, "p99_ms"),
                               median(env_live, "rss_kb"))
        for who in PROXIES:
            live, na = cell(s, who)
            if na:
                out.append(f"| {SCENARIOS[s]} | {NAMES[who]} | n/a: {na} "
                           "| | | | | | | | | | |")
                continue
            if not live:
                continue
            rps, p99, rss = median(live, "rps"), median(live, "p99_ms"), median(live, "rss_kb")
            label = NAMES[who]
            if s == 3 and who in ("envoy", "nginx"):
                label += " (mirror)"
            out.append(
                f"| {SCENARIOS[s]} | {label} | {fmt(rps)} | {fmt(median(live, 'p50_ms'), 2)} "
                f"| {fmt(p99, 2)} | {fmt(median(live, 'p999_ms'), 2)} "
                f"| {fmt(median(live, 'success_pct'), 2)} "
                f"| {fmt(median(live, 'fallback_pct'), 2)} | {fmt(mib(rss), 1)} "
                f"| {fmt(median(live, 'cpu_us_per_req'))} "
                f"| {ratio(rps, e_rps)} | {ratio(p99, e_p99)} | {ratio(rss, e_rss)} |")
    env5, _ = cell(5, "envoy")
    for key, what in (("idle_rss_kb", "idle"), ("peak_rss_kb", "peak (VmHWM) under (1)")):
        e = median(env5, key)
        for who in PROXIES:
            live, _ = cell(5, who)
            if not live:
                continue
            v = median(live, key)
            out.append(f"| (5) RSS {what} | {NAMES[who]} | | | | | | | {fmt(mib(v), 1)} "
                       f"| | | | {ratio(v, e)} |")
    env6, _ = cell(6, "envoy")
    e6 = median(env6, "rss_kb")
    for who in PROXIES:
        live, _ = cell(6, who)
        if not live:
            continue
        v = median(live, "rss_kb")
        held = median(live, "established_at_reading")
        if held is None:
            held = median(live, "connections")
        out.append(f"| {SCENARIOS[6]} | {NAMES[who]} | | | | | "
                   f"{fmt(100.0 * held / meta['idle_conns'], 2)} | | {fmt(mib(v), 1)} "
                   f"| | | | {ratio(v, e6)} |")
    out.append("")

    out.append("### Details\n")

    def span(rows, key, digits=0):
        vals = [r[key] for r in rows if r.get(key) is not None]
        if not vals:
            return "—"
        lo, hi = min(vals), max(vals)
        a, b = fmt(lo, digits), fmt(hi, digits)
        return a if a == b else f"{a}–{b}"

    for r in runs:
        if r.get("error"):
            out.append(f"- **Failed**: {NAMES[r['who']]}, repetition {r['rep'] + 1}: "
                       f"{r['error']}")
    for who in PROXIES:
        live, _ = cell(6, who)
        if live:
            errs = sorted({r.get("errors_detail") or "-" for r in live} - {"-"})
            out.append(
                f"- (6) {NAMES[who]}: {span(live, 'connections')} of {meta['idle_conns']:,} "
                f"opened in {span(live, 'open_seconds', 1)} s"
                + (f" (errors: {', '.join(errs)})" if errs else "")
                + f"; {span(live, 'established_at_reading')} established when RSS was read, "
                f"{span(live, 'still_open')} still open at the end; RSS "
                f"{span([{'v': mib(r['rss_before_kb'])} for r in live], 'v', 1)} → "
                f"{span([{'v': mib(r['rss_kb'])} for r in live], 'v', 1)} MiB, "
                f"{span(live, 'kb_per_conn', 1)} KiB per connection.")
    live4, _ = cell(4, "callgate")
    d4 = median(cell(4, "direct")[0], "rps")
    c4 = median(live4, "rps")
    if d4 and c4:
        out.append(f"- (4) callgate acknowledges {c4 / d4:.2f}× the notifications per second "
                   "that the upstream answers on its own (the direct row, plain HTTP and "
                   "no disk).")
    if live4:
        out.append(f"- (4) callgate: {sum(r['answered'] for r in live4):,} notifications "
                   f"acknowledged over {len(live4)} run(s), "
                   f"{sum(r.get('delivered', 0) for r in live4):,} delivered to the upstream; "
                   f"{sum(r.get('pending_after', 0) for r in live4)} still pending "
                   f"{span(live4, 'drain_s', 1)} s after the load stopped.")
    for s in (1, 2, 3, 4):
        for who in PROXIES:
            live, _ = cell(s, who)
            odd, errs = {}, {}
            for r in live:
                for k, v in r["statuses"].items():
                    if k != "200":
                        odd[k] = odd.get(k, 0) + v
                for k, v in r["errors"].items():
                    errs[k] = errs.get(k, 0) + v
            if odd or errs:
                out.append(f"- {SCENARIOS[s]}, {NAMES[who]}, all repetitions: other statuses "
                           f"{odd or '{}'}, client errors {errs or '{}'}")
    if meta["reps"] > 1:
        out.append("\nreq/s of each repetition (the spread shows the noise):\n")
        for s in (1, 2, 3, 4):
            for who in PROXIES:
                live, _ = cell(s, who)
                if live:
                    vals = ", ".join(fmt(r["rps"]) for r in sorted(live, key=lambda r: r["rep"]))
                    out.append(f"- {SCENARIOS[s]}, {NAMES[who]}: {vals}")
    out.append("")

    out.append("## What each scenario does\n")
    out.append(
        "All proxies listen on 127.0.0.1 with mutual TLS (server certificate for "
        "`localhost`, the client must present a certificate of the bench CA; all made by "
        "`callgate certs`), and forward the POST over HTTP/1.1 keep-alive to upstreams on "
        "127.0.0.1. The load tool is oha over HTTP/1.1 with a client certificate, "
        f"closed loop, `-z {meta['seconds']}s`, client timeout {meta['client_timeout']} "
        "(IM's own). The upstream is `examples/upstream.rs` (answers "
        "`{\"ActionStatus\":\"OK\",\"ErrorInfo\":\"\",\"ErrorCode\":0}`; its log goes to "
        "/dev/null); the never-answering upstream is `bench/blackhole.py`. Every proxy "
        "and upstream is started fresh for each proxy and repetition. Per-request logging "
        "is off everywhere (callgate `RUST_LOG=warn`, Envoy and nginx log only fallbacks, "
        "which is how they are counted). Configurations: `bench/conf/`.\n")
    out.append(
        "1. **Decision to one fast upstream**: `Group.CallbackBeforeSendMsg`, a "
        "412-byte body (`bench/bodies/before-send-msg.json`), 64 connections. callgate "
        "checks the query and the body's shape, routes, and returns the upstream's answer; "
        "Envoy and nginx just forward.\n"
        "2. **Never-answering upstream**: 200 connections; the upstream accepts and never "
        "answers. Each proxy has a 300 ms deadline and then answers 200 "
        "`{\"ActionStatus\":\"OK\",...}` itself: callgate `deadline: 300ms, on_timeout: "
        "allow`; Envoy route `timeout: 0.3s` plus a `local_reply_config` mapper on the "
        "upstream response flags; nginx `proxy_read_timeout 300ms` plus `error_page 502 503 "
        "504 =200`. Fallbacks are counted by callgate's `callgate_fallbacks_total`, and by "
        "an access log that logs only those answers in Envoy and nginx. The direct row "
        "shows what IM would get with no gateway: nothing, until its own 2 s timeout.\n"
        "3. **Three upstreams**: callgate asks all three at once (`policy: strictest`) and "
        "answers when all allowed. Envoy and nginx cannot fan a decision out; they forward "
        "to one upstream and **mirror** the request to the other two "
        "(`request_mirror_policies`, nginx `mirror`), answers of the mirrors ignored. Same "
        "upstream traffic, less work than a real fan-out: it favours the peers.\n"
        "4. **Notifications**: `Group.CallbackAfterSendMsg` (478 bytes), 64 connections. "
        "callgate writes each to the durable outbox (redb, fsync'd group commits, on "
        "disk), answers 200 at once and delivers in the background; the figures are "
        "acknowledgements per second. Envoy and nginx have no outbox (n/a); the direct "
        "row is the upstream answering the same POSTs itself.\n"
        "5. **Memory**: RSS 1 s after start (idle), and the peak (`VmHWM`) after run (1). "
        "nginx is the sum of its master and worker processes (shared pages are counted "
        "in each).\n"
        f"6. **Idle connections**: {meta['idle_conns']:,} mutual-TLS connections to a "
        "freshly started proxy, each makes one request (so it is a real keep-alive "
        "connection) and then stays idle; RSS is read 2 s after all are open "
        "(`bench/idle_conns.py`). Every proxy's keep-alive idle timeout is 300 s for "
        "this (callgate's `limits.idle_timeout`). "
        "*success %* is the share of the connections established when RSS was read.\n")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--oha", default="oha")
    ap.add_argument("--envoy", default="envoy")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    results = json.loads(Path(args.results).read_text())
    text = build(results, machine(), versions(args.oha, args.envoy), args.quick)
    # The record of past performance work is kept by hand beside the
    # harness; every run carries it over.
    history = Path(__file__).with_name("history.md")
    if history.exists():
        kept = history.read_text()
        kept = "\n".join(l for l in kept.splitlines() if not l.startswith("<!--"))
        text += "\n" + kept.strip() + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
