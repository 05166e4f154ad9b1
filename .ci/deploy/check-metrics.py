#!/usr/bin/env python3
"""Check that the Grafana dashboard and the alert rules use only metrics the
server really exports.

Every medic_* name in the dashboard's queries (k8s/base/dashboards/*.json,
"expr" fields) and in the PrometheusRule expressions (k8s/base/
prometheusrule.yaml) must appear in the server's /metrics output.

The exposition comes either from a file (--metrics-file, used to test this
script) or from a real server: MEDIC_SERVER_BIN (or --server-bin) is started
on a free port with a throw-away SQLite database, exercised with a few
requests so the request, heartbeat, auth-failure and rate-limit series exist,
scraped, and stopped.

usage: check-metrics.py [--repo DIR] (--metrics-file FILE | --server-bin BIN)
exit:  0 all names exported, 1 some missing, 2 the server could not be run
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

METRIC = re.compile(r"\bmedic_[a-zA-Z0-9_:]*")
# Prometheus functions and keywords never start with medic_, so any medic_*
# token in a PromQL expression is a metric name. Label values are quoted
# strings; drop them first so a value such as "medic_x" is not mistaken.
QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')


def names_in_expr(expr: str) -> set[str]:
    return set(METRIC.findall(QUOTED.sub('""', expr)))


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                elif key == "templating":
                    for var in value.get("list", []):
                        q = var.get("query")
                        if isinstance(q, dict):
                            q = q.get("query", "")
                        if var.get("type") == "query" and isinstance(q, str):
                            exprs.append(q)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return exprs


def referenced(repo: pathlib.Path) -> dict[str, set[str]]:
    """medic_* name -> the files that use it."""
    used: dict[str, set[str]] = {}
    for path in sorted(glob.glob(str(repo / "k8s/base/dashboards/*.json"))):
        for expr in dashboard_exprs(json.loads(pathlib.Path(path).read_text())):
            for name in names_in_expr(expr):
                used.setdefault(name, set()).add(os.path.relpath(path, repo))
    rules = repo / "k8s/base/prometheusrule.yaml"
    for doc in yaml.safe_load_all(rules.read_text()):
        if not doc or doc.get("kind") != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                for name in names_in_expr(str(rule["expr"])):
                    used.setdefault(name, set()).add(os.path.relpath(rules, repo))
    return used


def exported(text: str) -> set[str]:
    """Names in a Prometheus text exposition: sample names plus the family
    names of # TYPE / # HELP lines (so a histogram counts with and without
    its _bucket/_sum/_count suffixes)."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                names.add(parts[2])
            continue
        m = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if m:
            names.add(m.group(0))
    return names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def scrape_server(binary: str) -> str:
    with tempfile.TemporaryDirectory(prefix="medic-metrics-") as tmp:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "DATABASE_URL": f"sqlite://{tmp}/m.db",
            "PORT": str(port),
            "MEDIC_LOG_FORMAT": "text",
            "MEDIC_LOG_LEVEL": "warn",
            "MEDIC_ALLOW_ANONYMOUS_HEARTBEATS": "true",
            # Low enough that the second /docs request is rejected (429).
            "RATE_LIMIT_DOCS_REQUESTS": "1",
        }
        log = open(os.path.join(tmp, "server.log"), "w+")
        proc = subprocess.Popen([binary, "serve"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                try:
                    if request("GET", f"{base}/health/live")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("server not live after 60 s")
                time.sleep(0.2)
            # Exercise the server so labelled series exist: plain requests,
            # a heartbeat for an unknown service, a bad API key, a 429.
            request("GET", f"{base}/health")
            request("GET", f"{base}/health/ready")
            request("POST", f"{base}/heartbeat",
                    json.dumps({"heartbeat_name": "metrics-probe", "status": "UP"}).encode(),
                    {"Content-Type": "application/json"})
            request("GET", f"{base}/service", headers={"Authorization": "Bearer invalid-metrics-probe"})
            request("GET", f"{base}/docs")
            request("GET", f"{base}/docs")
            status, text = request("GET", f"{base}/metrics")
            if status != 200:
                raise RuntimeError(f"/metrics answered {status}")
            return text
        except Exception:
            log.seek(0)
            sys.stderr.write("--- server log ---\n" + log.read()[-4000:] + "\n")
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[2])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--metrics-file", type=pathlib.Path)
    src.add_argument("--server-bin", default=os.environ.get("MEDIC_SERVER_BIN"))
    args = ap.parse_args()

    used = referenced(args.repo)
    if not used:
        print("check-metrics: no medic_* metric referenced; nothing to check", file=sys.stderr)
        return 1
    if args.metrics_file:
        text, source = args.metrics_file.read_text(), str(args.metrics_file)
    elif args.server_bin:
        try:
            text, source = scrape_server(args.server_bin), f"{args.server_bin} /metrics"
        except Exception as err:  # noqa: BLE001 - report and fail
            print(f"check-metrics: could not scrape the server: {err}", file=sys.stderr)
            return 2
    else:
        ap.error("give --metrics-file or --server-bin (or set MEDIC_SERVER_BIN)")

    have = exported(text)
    missing = {name: files for name, files in used.items() if name not in have}
    for name in sorted(used):
        mark = "MISSING" if name in missing else "ok"
        print(f"  {mark:7} {name}  ({', '.join(sorted(used[name]))})")
    if missing:
        print(f"check-metrics: {len(missing)} of {len(used)} referenced metrics are not exported by {source}")
        return 1
    print(f"check-metrics: all {len(used)} referenced metrics are exported by {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
