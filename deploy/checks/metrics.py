"""Metric helpers for deploy/check.sh.

  metrics.py to-text FILE           OpenMetrics text -> Prometheus text 0.0.4 on stdout
  metrics.py names FILE REF...      every callgate_* name used in REF files is exposed in FILE
  metrics.py exprs DASHBOARD        the dashboard's queries, variables filled in, one per line
  metrics.py prometheus URL RULES DASHBOARD GENERATION
                                    asserts through a live Prometheus' HTTP API

`promtool check metrics` parses only the classic text format, where a
counter's HELP and TYPE name the sample (`x_total`); OpenMetrics names the
family (`x`), which promtool reports as "no help text". to-text renames
the counter families' HELP/TYPE lines and drops `# EOF`: nothing else
changes, so every other lint still applies. The raw OpenMetrics output is
checked by the live Prometheus, which scrapes it with its strict
OpenMetrics parser.
"""

import json
import re
import sys
import time
import urllib.parse
import urllib.request


def to_text(path):
    lines = open(path).read().splitlines()
    counters = {l.split()[2] for l in lines if l.startswith("# TYPE ") and l.split()[3] == "counter"}
    out = []
    for line in lines:
        if line == "# EOF" or line.startswith("# UNIT "):
            continue
        parts = line.split(" ", 3)
        if line.startswith(("# HELP ", "# TYPE ")) and parts[2] in counters:
            parts[2] += "_total"
            line = " ".join(parts)
        out.append(line)
    print("\n".join(out))


def exposed(path):
    names = set()
    for line in open(path):
        if line.startswith("# TYPE "):
            names.add(line.split()[2])  # the family, e.g. x for x_total
        if line.startswith("#") or not line.strip():
            continue
        names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def names(path, refs):
    have = exposed(path)
    bad = []
    for ref in refs:
        for name in sorted(set(re.findall(r"\bcallgate_[a-z_]+[a-z]", open(ref).read()))):
            if name not in have:
                bad.append(f"{ref}: {name} is not exposed by callgate")
    for b in bad:
        print(f"  FAIL {b}")
    if bad:
        sys.exit(1)
    print(f"  every callgate_* name in {len(refs)} files is exposed ({len(have)} series names)")


def exprs(dashboard):
    out = []
    for panel in json.load(open(dashboard))["panels"]:
        for target in panel.get("targets", []):
            e = target["expr"]
            e = e.replace("$__rate_interval", "1m").replace('=~"$job"', '=~".*"').replace('=~"$instance"', '=~".*"')
            if "$" in e.replace("{{", ""):
                raise SystemExit(f"unfilled variable in {e}")
            out.append(e)
    return out


def api(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def wait(what, fn, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = fn()
            if ok:
                return last
        except Exception as e:  # not up yet, or an answer still to come
            last = e
        time.sleep(0.5)
    raise SystemExit(f"  FAIL {what} (after {seconds}s): {last}")


def prometheus(base, rules_file, dashboard, generation):
    def target():
        ts = api(base, "/api/v1/targets")["activeTargets"]
        t = [t for t in ts if t["labels"].get("job") == "callgate"]
        return bool(t) and t[0]["health"] == "up" and not t[0]["lastError"], t
    wait("the callgate target is scraped without error", target, 30)
    print("  target up: the OpenMetrics output parses in Prometheus")

    def gen():
        r = api(base, "/api/v1/query", query='callgate_config_generation{job="callgate"}')["result"]
        return bool(r) and r[0]["value"][1] == generation, r
    wait(f"callgate_config_generation is {generation}", gen, 30)
    print(f"  callgate_config_generation{{job=\"callgate\"}} = {generation} in Prometheus")

    def rules():
        groups = api(base, "/api/v1/rules")["groups"]
        rs = [r for g in groups for r in g["rules"]]
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rs if r["health"] != "ok"]
        return bool(rs) and not bad, bad or rs
    rs = wait(f"every rule of {rules_file} evaluates", rules, 30)
    print(f"  {len(rs)} alert rules loaded and evaluating without error")

    def dead():
        alerts = api(base, "/api/v1/alerts")["alerts"]
        a = [a for a in alerts if a["labels"]["alertname"] == "CallgateDeadLetters"]
        return bool(a), alerts
    wait("CallgateDeadLetters becomes pending on a real dead letter", dead, 30)
    print("  CallgateDeadLetters is active for the dead letter")

    qs = exprs(dashboard)
    for q in qs:
        api(base, "/api/v1/query", query=q)
    print(f"  {len(qs)} dashboard queries run")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "to-text":
        to_text(args[0])
    elif cmd == "names":
        names(args[0], args[1:])
    elif cmd == "exprs":
        print("\n".join(exprs(args[0])))
    elif cmd == "prometheus":
        prometheus(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")
