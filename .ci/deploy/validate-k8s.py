#!/usr/bin/env python3
"""Validate rendered Kustomize output (kubectl kustomize k8s/overlays/<env>).

1. Schema: built-in kinds against the Kubernetes OpenAPI schemas shipped by
   kubernetes-validate (strict: unknown fields fail); ExternalSecret,
   SecretStore, ServiceMonitor and PrometheusRule against crd-schemas/.
   Any other kind fails: it has no schema here.
2. Medic policy checks that a schema cannot express (see check_policy).

usage: validate-k8s.py RENDERED.yaml --env dev --runbook docs/runbook.md
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

HERE = pathlib.Path(__file__).resolve().parent
CRD_SCHEMAS = {
    ("external-secrets.io/v1", "ExternalSecret"): "externalsecret.yaml",
    ("external-secrets.io/v1", "SecretStore"): "secretstore.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.yaml",
}
SECRET_KEYS = {
    "DATABASE_URL", "REDIS_URL", "MEDIC_SECRETS_KEY", "SLACK_API_TOKEN",
    "SLACK_SIGNING_SECRET", "MEDIC_WEBHOOK_SECRET", "MEDIC_ADMIN_API_KEY",
    "PAGERDUTY_ROUTING_KEY",
}


def load_crd_registry() -> Registry:
    registry = Registry()
    for path in (HERE / "crd-schemas").glob("*.yaml"):
        schema = yaml.safe_load(path.read_text())
        registry = registry.with_resource(schema["$id"], DRAFT202012.create_resource(schema))
    return registry


def validate_schema(docs: list[dict], k8s_version: str) -> list[str]:
    errors = []
    registry = load_crd_registry()
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if key in CRD_SCHEMAS:
            schema = registry.contents(yaml.safe_load(
                (HERE / "crd-schemas" / CRD_SCHEMAS[key]).read_text())["$id"])
            validator = jsonschema.Draft202012Validator(schema, registry=registry)
            for err in validator.iter_errors(doc):
                path = "/".join(str(p) for p in err.absolute_path)
                errors.append(f"{name}: {path}: {err.message}")
            continue
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.path)
            errors.append(f"{name}: {path}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError as err:
            errors.append(f"{name}: no schema: {err.message}")
    return errors


def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def check_policy(docs: list[dict], env: str, runbook: pathlib.Path) -> list[str]:
    errors: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)

    def one(kind: str, name: str) -> dict | None:
        found = [d for d in by_kind.get(kind, []) if d["metadata"]["name"] == name]
        if len(found) != 1:
            errors.append(f"expected exactly one {kind}/{name}, found {len(found)}")
            return None
        return found[0]

    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    if namespaces != {"medic"}:
        errors.append(f"every object must be in namespace medic, found {sorted(map(str, namespaces))}")

    # Workloads: hardened pods, resources, probes.
    for doc in by_kind.get("Deployment", []) + by_kind.get("Job", []):
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("runAsUser") != 1000:
            errors.append(f"{name}: pod must run as non-root uid 1000")
        if pod.get("automountServiceAccountToken") is not False:
            errors.append(f"{name}: automountServiceAccountToken must be false")
        for c in containers(doc):
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{name}/{c['name']}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{name}/{c['name']}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{name}/{c['name']}: capabilities must drop ALL")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                if not {"cpu", "memory"} <= set(res.get(part, {})):
                    errors.append(f"{name}/{c['name']}: {part} for cpu and memory required")
            if doc["kind"] == "Deployment":
                live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
                ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
                if (live, ready) != ("/health/live", "/health/ready"):
                    errors.append(f"{name}/{c['name']}: probes must be /health/live and /health/ready")
        mounts = {m["mountPath"] for c in containers(doc) for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            errors.append(f"{name}: /tmp must be a writable emptyDir")

    # Deployments: roles match their names.
    for dep, role in (("medic-api", "api"), ("medic-worker", "worker")):
        d = one("Deployment", dep)
        if d:
            args = d["spec"]["template"]["spec"]["containers"][0].get("args", [])
            if args != ["serve", "--role", role]:
                errors.append(f"Deployment/{dep}: args must be serve --role {role}, got {args}")

    job = one("Job", "medic-migrate")
    if job:
        spec = job["spec"]
        if spec.get("ttlSecondsAfterFinished") != 3600 or spec.get("backoffLimit") != 3:
            errors.append("Job/medic-migrate: ttlSecondsAfterFinished 3600 and backoffLimit 3 required")
        if job["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
            errors.append("Job/medic-migrate: must run `medic-server migrate`")

    # Configuration: one environment name, used everywhere.
    cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].startswith("medic-config-")]
    if len(cms) != 1:
        errors.append("expected one hash-suffixed medic-config ConfigMap")
    else:
        data = cms[0]["data"]
        if data.get("MEDIC_ENVIRONMENT") != env:
            errors.append(f"medic-config MEDIC_ENVIRONMENT is {data.get('MEDIC_ENVIRONMENT')!r}, expected {env!r}")
        leaked = SECRET_KEYS & set(data)
        if leaked:
            errors.append(f"secrets must not be in the ConfigMap: {sorted(leaked)}")

    es = one("ExternalSecret", "medic-secrets")
    if es:
        keys = {d["remoteRef"]["key"] for d in es["spec"]["data"]}
        if keys != {f"medic/{env}/secrets"}:
            errors.append(f"ExternalSecret reads {sorted(keys)}, expected medic/{env}/secrets")
        mapped = {d["secretKey"] for d in es["spec"]["data"]}
        if mapped != SECRET_KEYS:
            errors.append(f"ExternalSecret maps {sorted(mapped)}, expected {sorted(SECRET_KEYS)}")
        for d in es["spec"]["data"]:
            if d["secretKey"] != d["remoteRef"].get("property"):
                errors.append(f"ExternalSecret: {d['secretKey']} must map the property of the same name")

    sa = one("ServiceAccount", "medic-external-secrets")
    if sa:
        arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
        if not re.fullmatch(rf"arn:aws:iam::\d{{12}}:role/medic-{env}-external-secrets", arn):
            errors.append(f"ServiceAccount/medic-external-secrets: IRSA role ARN {arn!r} does not match medic-{env}-external-secrets")

    sm = one("ServiceMonitor", "medic")
    if sm:
        for ep in sm["spec"]["endpoints"]:
            envs = [r.get("replacement") for r in ep.get("relabelings", []) if r.get("targetLabel") == "env"]
            if envs != [env] or ep.get("interval") != "30s":
                errors.append("ServiceMonitor: every endpoint needs interval 30s and env relabelling to the overlay's environment")

    ing = one("Ingress", "medic")
    if ing:
        ann = ing["metadata"].get("annotations", {})
        for key in ("certificate-arn", "ssl-redirect", "healthcheck-path", "target-type"):
            if f"alb.ingress.kubernetes.io/{key}" not in ann:
                errors.append(f"Ingress/medic: annotation alb.ingress.kubernetes.io/{key} missing")
        if "REPLACE" in ann.get("alb.ingress.kubernetes.io/certificate-arn", "REPLACE"):
            errors.append("Ingress/medic: the overlay must set the certificate ARN")

    # Alerts: every rule links an existing runbook section.
    anchors = set()
    for line in runbook.read_text().splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    for rule_doc in by_kind.get("PrometheusRule", []):
        for group in rule_doc["spec"]["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule.get("annotations", {}).get("runbook_url", "")
                m = re.fullmatch(r"https://github\.com/medic-dev/medic/blob/main/docs/runbook\.md#([a-z0-9_-]+)", url)
                if not m:
                    errors.append(f"alert {rule['alert']}: runbook_url {url!r} must point into docs/runbook.md")
                elif m.group(1) != rule["alert"].lower():
                    errors.append(f"alert {rule['alert']}: runbook anchor should be #{rule['alert'].lower()}")
                elif m.group(1) not in anchors:
                    errors.append(f"alert {rule['alert']}: docs/runbook.md has no section #{m.group(1)}")
                if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                    errors.append(f"alert {rule['alert']}: severity must be warning or critical")

    # The dashboard must be valid JSON with a unique uid.
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            for fname, body in cm.get("data", {}).items():
                try:
                    dash = json.loads(body)
                except json.JSONDecodeError as err:
                    errors.append(f"dashboard {fname}: invalid JSON: {err}")
                    continue
                if not dash.get("uid") or not dash.get("panels"):
                    errors.append(f"dashboard {fname}: uid and panels required")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--env", required=True)
    ap.add_argument("--runbook", required=True, type=pathlib.Path)
    ap.add_argument("--kubernetes-version", default="1.33.0")
    args = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(open(args.rendered)) if d]
    errors = validate_schema(docs, args.kubernetes_version)
    errors += check_policy(docs, args.env, args.runbook)
    kinds = sorted({d["kind"] for d in docs})
    if errors:
        for e in errors:
            print(f"  FAIL {args.env}: {e}")
        return 1
    print(f"  ok   {args.env}: {len(docs)} objects valid (Kubernetes {args.kubernetes_version}; kinds: {', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
