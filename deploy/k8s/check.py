#!/usr/bin/env python3
"""Checks deploy/k8s/*.yaml offline: against the Kubernetes API schemas (kubernetes-validate,
which bundles them) and against the project's own rules. Then checks that each rule catches
a manifest that breaks it (so the checks themselves cannot silently pass).

Usage: python3 deploy/k8s/check.py [--k8s-version 1.30.0]
"""
import copy
import pathlib
import re
import sys

import kubernetes_validate
import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ADMIN_SRC = ROOT / "node" / "src" / "admin" / "mod.rs"
CLI_SRC = ROOT / "node" / "src" / "cli" / "mod.rs"


def admin_routes():
    return set(re.findall(r'\.route\(\s*"([^"]+)"', ADMIN_SRC.read_text()))


def arg_value(args, flag):
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def project_problems(docs):
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    sets = by_kind.get("StatefulSet", [])
    if len(sets) != 1:
        return [f"expected one StatefulSet, found {len(sets)}"]
    sts = sets[0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    replicas = spec.get("replicas", 1)
    if replicas % 2 == 0:
        problems.append(f"replicas must be odd (Raft voters), got {replicas}")
    if spec.get("podManagementPolicy") != "Parallel":
        problems.append("podManagementPolicy must be Parallel")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    headless = services.get(spec.get("serviceName"))
    if headless is None:
        problems.append(f"serviceName {spec.get('serviceName')!r} names no Service")
    else:
        if headless["spec"].get("clusterIP") != "None":
            problems.append("the peer Service must be headless (clusterIP: None)")
        if headless["spec"].get("publishNotReadyAddresses") is not True:
            problems.append("the peer Service must publish not-ready addresses")
        if headless["spec"].get("selector") != labels:
            problems.append("the peer Service must select the StatefulSet's pods")
    if not any(s["spec"].get("clusterIP") != "None" for s in services.values()):
        problems.append("a client Service (not headless) is missing")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if not pdbs or pdbs[0]["spec"].get("maxUnavailable") != 1:
        problems.append("a PodDisruptionBudget with maxUnavailable: 1 is missing")
    elif pdbs[0]["spec"]["selector"].get("matchLabels") != labels:
        problems.append("the PodDisruptionBudget must select the StatefulSet's pods")
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    if not anti:
        problems.append("pod anti-affinity is missing")
    container = pod["containers"][0]
    args = container.get("args", [])
    if "--node-id-from-hostname" not in args:
        problems.append("the node id must come from the pod ordinal (--node-id-from-hostname)")
    admin = arg_value(args, "--admin") or ""
    admin_port = int(admin.rsplit(":", 1)[1]) if ":" in admin else None
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    routes = admin_routes()
    # The node serves its admin API over TLS unless told `off` or bound to loopback.
    tls_mode = arg_value(args, "--admin-tls") or "auto"
    loopback = admin.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")
    tls = tls_mode == "on" or (tls_mode == "auto" and not loopback)
    if not tls:
        problems.append("the admin API must serve TLS (no --admin-tls=off on a pod address): "
                        "the token would cross the network in clear")

    def http_probe_ok(name, probe, allowed):
        get = probe.get("httpGet")
        if not get:
            return
        if get["path"] not in routes:
            problems.append(f"{name} probes {get['path']}, which the admin API does not serve")
        if get["path"] not in allowed:
            problems.append(f"{name} must probe one of {sorted(allowed)}, not {get['path']}")
        if tls and get.get("scheme") != "HTTPS":
            problems.append(f"{name} must use scheme HTTPS: the admin API serves TLS")
        port = ports.get(get["port"], get["port"])
        if port != admin_port:
            problems.append(f"{name} probes port {port}, the admin API listens on {admin_port}")

    live = container.get("livenessProbe")
    if not live or "httpGet" not in live:
        problems.append("livenessProbe must be an httpGet of /healthz")
    else:
        http_probe_ok("livenessProbe", live, {"/healthz"})
    start = container.get("startupProbe")
    if not start:
        problems.append("startupProbe is missing")
    else:
        http_probe_ok("startupProbe", start, {"/healthz"})
    ready = container.get("readinessProbe")
    if not ready:
        problems.append("readinessProbe is missing")
    elif "httpGet" in ready:
        http_probe_ok("readinessProbe", ready, {"/readyz"})
    else:
        cmd = ready.get("exec", {}).get("command", [])
        if cmd[1:3] != ["node", "ready"] or not re.search(r"\bReady\s*\{", CLI_SRC.read_text()):
            problems.append("readinessProbe must check /readyz (httpGet or `airssys node ready`)")
        endpoint = arg_value(cmd, "--endpoint") or ""
        if not endpoint.endswith(f":{admin_port}"):
            problems.append(f"readinessProbe checks {endpoint}, the admin API is on {admin_port}")
        if tls and not endpoint.startswith("https://"):
            problems.append(f"readinessProbe checks {endpoint}: the admin API serves https://")
        ca = arg_value(cmd, "--ca")
        tls_dir = arg_value(args, "--tls-dir") or ""
        if tls and not (ca or "").startswith(tls_dir.rstrip("/") + "/"):
            problems.append("readinessProbe needs --ca with the cluster CA from --tls-dir")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    data_dir = arg_value(args, "--data-dir")
    if mounts.get(data_dir) not in claims:
        problems.append(f"--data-dir {data_dir} must be a volumeClaimTemplate mount")
    secret_vols = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    if mounts.get(arg_value(args, "--tls-dir")) not in secret_vols:
        problems.append("--tls-dir must be mounted from a Secret")
    env = {e["name"]: e for e in container.get("env", [])}
    if "secretKeyRef" not in env.get("AIRSSYS_TOKEN", {}).get("valueFrom", {}):
        problems.append("AIRSSYS_TOKEN must come from a Secret")
    return problems


def schema_problems(docs, version):
    problems = []
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{d['kind']}/{d['metadata']['name']}: {e.message}")
    return problems


def mutations(docs):
    """(description, mutated docs): each must be refused."""
    def with_sts(change):
        m = copy.deepcopy(docs)
        sts = next(d for d in m if d["kind"] == "StatefulSet")
        change(sts)
        return m

    def container(sts):
        return sts["spec"]["template"]["spec"]["containers"][0]

    yield "even replicas", with_sts(lambda s: s["spec"].__setitem__("replicas", 4))
    yield "serviceName of no Service", with_sts(lambda s: s["spec"].__setitem__("serviceName", "nope"))
    yield "ordered pod management", with_sts(lambda s: s["spec"].__setitem__("podManagementPolicy", "OrderedReady"))
    yield "liveness on quorum", with_sts(lambda s: container(s)["livenessProbe"]["httpGet"].__setitem__("path", "/readyz"))
    yield "probe of a missing endpoint", with_sts(lambda s: container(s)["startupProbe"]["httpGet"].__setitem__("path", "/health"))
    yield "probe on the wrong port", with_sts(lambda s: container(s)["livenessProbe"]["httpGet"].__setitem__("port", 9999))
    yield "liveness over plain http", with_sts(lambda s: container(s)["livenessProbe"]["httpGet"].pop("scheme"))
    yield "admin API without TLS", with_sts(lambda s: container(s)["args"].append("--admin-tls=off"))
    yield "readiness over plain http", with_sts(lambda s: container(s)["readinessProbe"]["exec"].__setitem__(
        "command", ["/airssys", "node", "ready", "--endpoint", "http://127.0.0.1:7070"]))
    yield "no anti-affinity", with_sts(lambda s: s["spec"]["template"]["spec"].pop("affinity"))
    m = copy.deepcopy(docs)
    next(d for d in m if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")["spec"].pop("publishNotReadyAddresses")
    yield "peers hidden until ready", m
    m = copy.deepcopy(docs)
    next(d for d in m if d["kind"] == "PodDisruptionBudget")["spec"]["maxUnavailable"] = 2
    yield "PDB allowing two down", m


def main():
    version = "1.30.0"
    if "--k8s-version" in sys.argv:
        version = sys.argv[sys.argv.index("--k8s-version") + 1]
    failed = False
    for path in sorted(HERE.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        problems = schema_problems(docs, version) + project_problems(docs)
        for p in problems:
            print(f"{path.name}: {p}")
        failed |= bool(problems)
        for what, bad in mutations(docs):
            found = schema_problems(bad, version) + project_problems(bad)
            if not found:
                print(f"{path.name}: the checks missed a manifest with {what}")
                failed = True
        if not problems:
            print(f"{path.name}: {len(docs)} objects valid for Kubernetes {version}; project rules hold; "
                  f"every rule catches its mutation")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
