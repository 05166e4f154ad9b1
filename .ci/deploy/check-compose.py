#!/usr/bin/env python3
"""Static checks of docker-compose.yml (no Docker engine needed):
- every depends_on target exists; service_healthy targets have a healthcheck;
  service_completed_successfully targets are one-shot (restart "no");
- every ${VAR} the file interpolates is documented in .env.example;
- API and worker run the roles their names say, with a healthcheck that needs
  no curl (medic-server healthcheck).
usage: check-compose.py REPO_DIR
"""
import pathlib
import re
import sys

import yaml

repo = pathlib.Path(sys.argv[1])
text = (repo / "docker-compose.yml").read_text()
compose = yaml.safe_load(text)
env_example = {m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]*)=", (repo / ".env.example").read_text(), re.M)}
errors = []
services = compose["services"]

for name, svc in services.items():
    deps = svc.get("depends_on", {})
    for dep, cond in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
        if dep not in services:
            errors.append(f"{name}: depends_on unknown service {dep}")
            continue
        condition = cond.get("condition")
        target = services[dep]
        if condition == "service_healthy" and (not target.get("healthcheck") or target["healthcheck"].get("disable")):
            errors.append(f"{name}: waits for {dep} to be healthy but {dep} has no healthcheck")
        if condition == "service_completed_successfully" and target.get("restart", "no") != "no":
            errors.append(f"{name}: waits for {dep} to complete but {dep} restarts")
    if name not in ("medic-migrate",) and not svc.get("healthcheck") and "agent" not in svc.get("profiles", []):
        errors.append(f"{name}: no healthcheck")

for var in sorted(set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::?-[^}]*)?\}", text))):
    if var not in env_example:
        errors.append(f"${{{var}}} is used but not documented in .env.example")

for name, role in (("medic-api", "api"), ("medic-worker", "worker")):
    svc = services.get(name, {})
    if svc.get("command") != ["serve", "--role", role]:
        errors.append(f"{name}: command must be serve --role {role}")
    test = svc.get("healthcheck", {}).get("test", [])
    if "healthcheck" not in test or any("curl" in str(t) for t in test):
        errors.append(f"{name}: healthcheck must be `medic-server healthcheck`")

for image, major in (("postgres", "15"), ("redis", "7")):
    svc = services.get(image, {})
    if not str(svc.get("image", "")).startswith(f"{image}:{major}"):
        errors.append(f"{image}: image must be {image} {major}")
    if not svc.get("volumes"):
        errors.append(f"{image}: needs a volume")

if errors:
    for e in errors:
        print(f"  FAIL {e}")
    sys.exit(1)
print(f"  ok   docker-compose.yml: {len(services)} services, {len(env_example)} variables in .env.example")
