"""Checks of deploy/kubernetes beyond the JSON schemas (deploy/check.sh).

kubernetes-validate has no schema for the Prometheus Operator's PodMonitor,
so it is checked here against the subset of its CRD schema this project
uses (unknown fields are errors, as with --strict). Then the manifests are
checked against each other and against the callgate config they carry:
every file the config names lies on a volume mounted in the callgate
container, the listener and admin ports are the container ports the
Service, probes, scrape annotations and PodMonitor use, and the Secret
template holds the keys the config reads.

Usage: python3 manifests.py deploy/kubernetes
"""

import pathlib
import sys

import jsonschema
import yaml

LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
# Field names and types as in monitoring.coreos.com_podmonitors.yaml (v1).
PODMONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "jobLabel": {"type": "string"},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "portNumber": {"type": "integer"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}

problems = []


def problem(msg):
    problems.append(msg)


def load_all(root):
    docs = []
    for path in sorted(root.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def find(docs, kind, name=None):
    hits = [d for _, d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    if len(hits) != 1:
        problem(f"expected exactly one {kind} {name or ''}, found {len(hits)}")
        return {}
    return hits[0]


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def main(root):
    root = pathlib.Path(root)
    docs = load_all(root)

    for path, doc in docs:
        if doc.get("kind") == "PodMonitor":
            for err in jsonschema.Draft7Validator(PODMONITOR).iter_errors(doc):
                where = ".".join(str(p) for p in err.absolute_path) or "(top)"
                problem(f"{path}: PodMonitor {where}: {err.message}")

    before = len(problems)
    dep = find(docs, "Deployment")
    cm = find(docs, "ConfigMap", "callgate-routes")
    svc = find(docs, "Service")
    pm = find(docs, "PodMonitor")
    if len(problems) > before:
        return
    routes = yaml.safe_load(cm["data"]["routes.yaml"])
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    cg = containers.get("callgate")
    if cg is None:
        problem("deployment: no container named callgate")
        return
    ports = {p["name"]: p["containerPort"] for p in cg.get("ports", [])}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"].rstrip("/"): m for m in cg["volumeMounts"]}

    # The config file itself.
    args = cg.get("args", [])
    config_path = args[args.index("-c") + 1] if "-c" in args else "/etc/callgate/routes.yaml"
    cfg_dir, cfg_name = config_path.rsplit("/", 1)
    m = mounts.get(cfg_dir)
    if not m or "subPath" in m or volumes[m["name"]].get("configMap", {}).get("name") != "callgate-routes":
        problem(f"deployment: {cfg_dir} must be the whole ConfigMap callgate-routes (no subPath), for live reload")
    if cfg_name not in cm["data"]:
        problem(f"configmap: no key {cfg_name}")

    # Every file the config names is on a volume of the callgate container.
    def on_volume(path, what, writable=False):
        best = max((mp for mp in mounts if path.startswith(mp + "/")), key=len, default=None)
        if best is None:
            problem(f"{what} {path} is on no volume of the callgate container")
            return None
        if writable and mounts[best].get("readOnly"):
            problem(f"{what} {path} is on a read-only volume")
        return volumes[mounts[best]["name"]], path[len(best) + 1:]

    secret_keys = {}
    for path, doc in docs:
        if doc.get("kind") in ("Secret", "ConfigMap"):
            secret_keys[(doc["kind"], doc["metadata"]["name"])] = set(doc.get("stringData", {}) or {}) | set(doc.get("data", {}) or {})
    for listener in routes["listeners"]:
        lport = port_of(listener["addr"])
        if not listener["addr"].startswith("127.") and lport not in ports.values():
            problem(f"listener {listener['addr']}: port {lport} is not a containerPort of callgate")
        for key in ("cert", "key", "client_ca"):
            if key not in listener.get("tls", {}):
                continue
            found = on_volume(listener["tls"][key], f"listener tls.{key}")
            if not found:
                continue
            vol, rel = found
            if "secret" in vol:
                ref, kind = vol["secret"]["secretName"], "Secret"
                mode = vol["secret"].get("defaultMode", 0o644)
                if key == "key" and mode & 0o007:
                    problem(f"volume {vol['name']}: defaultMode {mode:o} lets others read the private key")
            elif "configMap" in vol:
                ref, kind = vol["configMap"]["name"], "ConfigMap"
                if key == "key":
                    problem("the private key must come from a Secret, not a ConfigMap")
            else:
                continue
            if (kind, ref) in secret_keys and rel not in secret_keys[(kind, ref)]:
                problem(f"{kind} {ref} (secrets/secrets.example.yaml) has no key {rel} for tls.{key}")
    on_volume(routes["delivery"]["outbox"], "delivery.outbox", writable=True)

    # Admin: probes, scrape annotations and the PodMonitor use its port.
    admin_port = port_of(routes["admin"]["addr"])
    if ports.get("admin") != admin_port:
        problem(f"containerPort admin is {ports.get('admin')}, admin.addr port is {admin_port}")
    if not routes["admin"]["addr"].startswith(("0.0.0.0:", "[::]:")):
        problem("admin.addr must listen on the pod IP (0.0.0.0) for the kubelet's probes")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = cg.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("admin", admin_port):
            problem(f"callgate {probe} must GET {path} on the admin port")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") != str(admin_port) or ann.get("prometheus.io/path") != "/metrics":
        problem("prometheus.io/port and /path annotations must name the admin port and /metrics")
    if [e.get("port") for e in pm["spec"]["podMetricsEndpoints"]] != ["admin"]:
        problem("PodMonitor must scrape the port named admin")

    # Selectors reach the pods; the Service exposes the listener, not admin.
    labels = pod["metadata"]["labels"]
    for what, sel in (("Service", svc["spec"]["selector"]), ("PodMonitor", pm["spec"]["selector"]["matchLabels"]),
                      ("Deployment", dep["spec"]["selector"]["matchLabels"])):
        if any(labels.get(k) != v for k, v in sel.items()):
            problem(f"{what} selector {sel} does not match the pod labels {labels}")
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort")
        if target in ("admin", admin_port):
            problem("the Service must not expose the admin port")
        if isinstance(target, str) and target not in ports:
            problem(f"Service targetPort {target} is no named port of callgate")

    # Shutdown: preStop plus the 10 s drain fit in the grace period, and the
    # backend outlives callgate's drain.
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre = cg.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if pre < 2 or pre + 10 > grace - 5:
        problem(f"callgate preStop {pre}s + 10s drain must leave room in terminationGracePeriodSeconds {grace}")
    for name, c in containers.items():
        if name == "callgate":
            continue
        other = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if other < pre + 10:
            problem(f"container {name}: preStop {other}s ends before callgate's drain ({pre}s + 10s)")

    sc = cg.get("securityContext", {})
    for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
        if sc.get(key) is not want:
            problem(f"callgate securityContext.{key} must be {want}")
    if "memory" not in cg.get("resources", {}).get("requests", {}) or "memory" not in cg.get("resources", {}).get("limits", {}):
        problem("callgate needs memory requests and limits")


if __name__ == "__main__":
    main(sys.argv[1])
    for p in problems:
        print(f"  FAIL {p}")
    if problems:
        sys.exit(1)
    print("  manifests agree with each other and with routes.yaml")
