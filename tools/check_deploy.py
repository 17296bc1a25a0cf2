#!/usr/bin/env python3
"""Offline checks of the deployment files under deploy/ (run through tools/check-deploy.sh).

Renders the Kubernetes kustomization with `kubectl kustomize`, validates every manifest against the
Kubernetes JSON schemas bundled by the `kubernetes-validate` package (strict: unknown fields are
errors), then checks the invariants the broker's deployment relies on: replica count, probes,
selectors, security context, that every file kbs.toml names is mounted into the container, the
RuntimeClass set, the systemd unit's hardening (and `systemd-analyze verify` when available), and
the container build file. Prints one line per check; exits 1 if any check failed.

Needs Python >= 3.11 (tomllib), PyYAML and kubernetes-validate.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
RUNTIME_CLASSES = DEPLOY / "kubernetes" / "runtimeclasses.yaml"
SECRET_EXAMPLE = BASE / "secret.example.yaml"
EXAMPLE_CONFIG = DEPLOY / "config" / "kbs-postgres.toml"
UNIT = DEPLOY / "systemd" / "cloister-kbs.service"
ENV_FILE = DEPLOY / "systemd" / "cloister-kbs.env"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"

EXPECTED_EXEC_START = (
    "/usr/local/bin/cloister-kbs --config-file /etc/cloister-kbs/kbs.toml --data-dir /var/lib/cloister-kbs"
)
EXPECTED_HANDLERS = {
    "cloister-qemu": None,
    "cloister-qemu-snp": "feature.node.kubernetes.io/cpu-security.sev.snp.enabled",
    "cloister-qemu-tdx": "feature.node.kubernetes.io/cpu-security.tdx.enabled",
    "cloister-qemu-se": "feature.node.kubernetes.io/cpu-security.se.enabled",
    "cloister-qemu-emulated": None,
    "cloister-qemu-emulated-tdx": None,
}
RUNTIME_LABEL = "cloister.io/runtime"
# Exposure score ceiling for `systemd-analyze security` (its scale x10: 20 means 2.0, "OK").
SECURITY_THRESHOLD = 20


class Checker:
    """Collects results; each check prints one line."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what)
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))
        return ok

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(what)
        print(f"  skip  {what}: {why}")


def section(title: str) -> None:
    print(f"== {title}")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def load_yaml_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def labels_match(selector: dict | None, labels: dict) -> bool:
    """A non-empty matchLabels selector whose every pair is in `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------
# Kubernetes


def render_kustomization(c: Checker, kubectl: str) -> list[dict]:
    section(f"render {rel(BASE)} ({kubectl} kustomize)")
    try:
        out = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    except OSError as e:
        c.check(False, "kustomization renders", str(e))
        return []
    if not c.check(out.returncode == 0, "kustomization renders", out.stderr.strip()):
        return []
    docs = [d for d in yaml.safe_load_all(out.stdout) if d is not None]
    kinds = sorted(f"{d.get('kind')}/{d.get('metadata', {}).get('name')}" for d in docs)
    print(f"        rendered: {', '.join(kinds)}")
    return docs


def validate_schemas(c: Checker, groups: list[tuple[str, list[dict]]], versions: list[str]) -> None:
    section(f"Kubernetes JSON schemas (kubernetes-validate {kubernetes_validate.version.__version__}, strict)")
    for version in versions:
        for origin, docs in groups:
            for d in docs:
                what = f"{origin}: {d.get('kind')}/{d.get('metadata', {}).get('name')} valid for {version}"
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                    c.check(True, what)
                except kubernetes_validate.ValidationError as e:
                    path = "/".join(str(p) for p in e.absolute_path) or "(top)"
                    c.check(False, what, f"at {path}: {e.message}")
                except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                    c.check(False, what, str(e))


def mounted_files(container: dict, volumes: dict[str, dict], configmaps: dict[str, dict]) -> dict[str, tuple]:
    """Container path -> (kind, object name, key) for every file projected into the container.
    A Secret mounted without `items` contributes (kind, name, "*") for its mount directory."""
    files: dict[str, tuple] = {}

    def add(mount: str, kind: str, name: str, items: list | None, known_keys: list[str] | None) -> None:
        if items:
            for it in items:
                files[os.path.join(mount, it["path"])] = (kind, name, it["key"])
        elif known_keys is not None:
            for k in known_keys:
                files[os.path.join(mount, k)] = (kind, name, k)
        else:
            files[mount.rstrip("/") + "/*"] = (kind, name, "*")

    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        mount = m["mountPath"]
        if "subPath" in m:
            # A single key mounted as a file.
            src = v.get("configMap") or v.get("secret") or {}
            kind = "ConfigMap" if "configMap" in v else "Secret"
            files[mount] = (kind, src.get("name") or src.get("secretName"), m["subPath"])
            continue
        if "configMap" in v:
            name = v["configMap"]["name"]
            add(mount, "ConfigMap", name, v["configMap"].get("items"), list(configmaps.get(name, {}).get("data", {})))
        elif "secret" in v:
            add(mount, "Secret", v["secret"]["secretName"], v["secret"].get("items"), None)
        elif "projected" in v:
            for s in v["projected"].get("sources", []):
                if "configMap" in s:
                    name = s["configMap"]["name"]
                    add(mount, "ConfigMap", name, s["configMap"].get("items"),
                        list(configmaps.get(name, {}).get("data", {})))
                elif "secret" in s:
                    add(mount, "Secret", s["secret"]["name"], s["secret"].get("items"), None)
    return files


def provided(path: str, files: dict[str, tuple]) -> tuple | None:
    if path in files:
        return files[path]
    return files.get(os.path.dirname(path) + "/*")


def config_file_paths(cfg: dict) -> list[tuple[str, str]]:
    """(config key, path) for every file the broker reads at start (key names of config.rs)."""
    out: list[tuple[str, str]] = []
    hs = cfg.get("http_server", {})
    for k in ("private_key", "certificate"):
        if k in hs:
            out.append((f"http_server.{k}", hs[k]))
    for p in cfg.get("attestation_token", {}).get("trusted_jwk_sets", []):
        out.append(("attestation_token.trusted_jwk_sets", p))
    asvc = cfg.get("attestation_service", {})
    signer = asvc.get("attestation_token_broker", {}).get("signer")
    if signer and "key_path" in signer:
        out.append(("attestation_service.attestation_token_broker.signer.key_path", signer["key_path"]))
    ver = asvc.get("verifier", {})
    for kind in ("snp_emulated_roots", "tdx_emulated_roots"):
        for r in ver.get(kind, []):
            out.append((f"attestation_service.verifier.{kind}.cert", r["cert"]))
            if "collateral" in r:
                out.append((f"attestation_service.verifier.{kind}.collateral", r["collateral"]))
    if "tdx_collateral" in ver:
        out.append(("attestation_service.verifier.tdx_collateral", ver["tdx_collateral"]))
    for p in asvc.get("rvps_config", {}).get("reference_value_files", []):
        out.append(("attestation_service.rvps_config.reference_value_files", p))
    for idp in cfg.get("admin", {}).get("authentication", {}).get("bearer_jwt", {}).get("identity_providers", []):
        uri = idp.get("public_key_uri", "")
        out.append(("admin.authentication.bearer_jwt.identity_providers.public_key_uri", uri.removeprefix("file://")))
    pg = cfg.get("storage_backend", {}).get("backends", {}).get("postgres", {})
    if "encryption_key_path" in pg:
        out.append(("storage_backend.backends.postgres.encryption_key_path", pg["encryption_key_path"]))
    pp = cfg.get("policy_engine", {}).get("policy_path")
    if pp:
        out.append(("policy_engine.policy_path", pp))
    return out


def check_postgres_config(c: Checker, cfg: dict, origin: str) -> None:
    sb = cfg.get("storage_backend", {})
    c.check(sb.get("storage_type") == "Postgres", f"{origin}: storage_type is \"Postgres\"",
            f"found {sb.get('storage_type')!r}")
    backends = sb.get("backends", {})
    pg = backends.get("postgres", {})
    c.check("url" in pg or "host" in pg, f"{origin}: [storage_backend.backends.postgres] has url or host")
    c.check(bool(pg.get("encryption_key_path")), f"{origin}: store encryption_key_path is set")
    c.check("local_fs" not in backends, f"{origin}: no leftover [storage_backend.backends.local_fs]")
    url = pg.get("url", "")
    c.check(not re.match(r"^[a-z]+://[^/@:]+:[^/@]+@", url), f"{origin}: no password in the url (use POSTGRES_URL)")
    hs = cfg.get("http_server", {})
    c.check(not hs.get("insecure_http", False), f"{origin}: TLS on (insecure_http is not set)")
    c.check(bool(hs.get("private_key")) and bool(hs.get("certificate")),
            f"{origin}: TLS key and certificate from files (same on every replica)")
    c.check(cfg.get("admin", {}).get("authorization_mode", "AuthenticatedAuthorization")
            == "AuthenticatedAuthorization", f"{origin}: admin API authenticated")
    c.check(not cfg.get("attestation_token", {}).get("insecure_header_jwk", False),
            f"{origin}: insecure_header_jwk is off")


def check_kubernetes(c: Checker, docs: list[dict], kube_versions: list[str]) -> None:
    rc_docs = load_yaml_docs(RUNTIME_CLASSES)
    secret_docs = load_yaml_docs(SECRET_EXAMPLE)
    if docs:
        validate_schemas(c, [(rel(BASE), docs), (rel(RUNTIME_CLASSES), rc_docs), (rel(SECRET_EXAMPLE), secret_docs)],
                         kube_versions)

    section("kustomization invariants")
    if not docs:
        c.check(False, "rendered manifests available", "rendering failed")
        return
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    c.check("secret.example.yaml" not in kustomization.get("resources", []) and "Secret" not in by_kind,
            "secret.example.yaml is not part of the kustomization (no Secret rendered)")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in ("Namespace",)}
    c.check(len(namespaces) == 1 and None not in namespaces, "all namespaced objects share one namespace",
            str(namespaces))
    for want in ("Deployment", "Service", "PodDisruptionBudget", "ConfigMap"):
        c.check(len(by_kind.get(want, [])) == 1, f"exactly one {want}", f"found {len(by_kind.get(want, []))}")
    deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "cloister-kbs"]
    if not c.check(len(deps) == 1, "Deployment cloister-kbs exists"):
        return
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    replicas = spec.get("replicas", 1)
    c.check(replicas >= 2, f"Deployment replicas >= 2 ({replicas})")
    c.check(labels_match(spec["selector"].get("matchLabels"), pod_labels),
            "Deployment selector matches its pod labels")

    svc = by_kind.get("Service", [{}])[0]
    c.check(labels_match(svc.get("spec", {}).get("selector"), pod_labels), "Service selector matches the pod labels",
            f"{svc.get('spec', {}).get('selector')} vs {pod_labels}")
    pdb = by_kind.get("PodDisruptionBudget", [{}])[0].get("spec", {})
    c.check(labels_match(pdb.get("selector", {}).get("matchLabels"), pod_labels),
            "PodDisruptionBudget selector matches the pod labels")
    min_avail = pdb.get("minAvailable")
    c.check(isinstance(min_avail, int) and 1 <= min_avail < replicas,
            f"PodDisruptionBudget minAvailable {min_avail} is >= 1 and < replicas (drains can proceed)")
    spread = pod.get("topologySpreadConstraints", [])
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    anti_terms = [t.get("podAffinityTerm", t) for t in
                  anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
                  + anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    c.check(any(t.get("topologyKey") == "kubernetes.io/hostname" for t in spread + anti_terms),
            "replicas are spread over nodes (topology spread or anti-affinity on hostname)")
    c.check(all(labels_match(t.get("labelSelector", {}).get("matchLabels"), pod_labels) for t in spread + anti_terms),
            "spread/anti-affinity selectors match the pod labels")

    containers = pod.get("containers", [])
    kbs = [ct for ct in containers if ct.get("name") == "kbs"]
    if not c.check(len(kbs) == 1, "container kbs exists"):
        return
    ct = kbs[0]
    ports = {p.get("name"): p["containerPort"] for p in ct.get("ports", [])}
    target = svc.get("spec", {}).get("ports", [{}])[0].get("targetPort")
    c.check(target in ports or target in ports.values(), f"Service targetPort {target!r} is a container port")
    c.check(svc.get("spec", {}).get("ports", [{}])[0].get("port") == 8080, "Service port is 8080")

    # Security context: pod-level values apply unless the container overrides them.
    psc, csc = pod.get("securityContext", {}), ct.get("securityContext", {})
    c.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot")
    c.check(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, "not running as uid 0")
    c.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    c.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    c.check(not csc.get("privileged", False), "not privileged")
    caps = csc.get("capabilities", {})
    c.check("ALL" in caps.get("drop", []) and not caps.get("add"), "capabilities: drop ALL, add none")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    c.check(seccomp in ("RuntimeDefault", "Localhost"), f"seccomp profile set ({seccomp})")
    c.check(pod.get("automountServiceAccountToken") is False, "no service account token mounted")
    res = ct.get("resources", {})
    c.check(bool(res.get("requests", {}).get("cpu")) and bool(res.get("requests", {}).get("memory"))
            and bool(res.get("limits", {}).get("memory")), "resources: cpu/memory requests and a memory limit")

    # The configuration the container actually gets.
    args = ct.get("args", [])
    cfg_path = args[args.index("--config-file") + 1] if "--config-file" in args[:-1] else None
    data_dir = args[args.index("--data-dir") + 1] if "--data-dir" in args[:-1] else None
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = mounted_files(ct, volumes, configmaps)
    src = provided(cfg_path, files) if cfg_path else None
    if not c.check(src is not None and src[0] == "ConfigMap" and src[1] in configmaps,
                   f"--config-file {cfg_path} is mounted from a rendered ConfigMap", f"source {src}"):
        return
    text = configmaps[src[1]].get("data", {}).get(src[2])
    try:
        cfg = tomllib.loads(text or "")
        c.check(text is not None, f"ConfigMap {src[1]} key {src[2]} parses as TOML")
    except tomllib.TOMLDecodeError as e:
        c.check(False, f"ConfigMap {src[1]} key {src[2]} parses as TOML", str(e))
        return
    check_postgres_config(c, cfg, "ConfigMap kbs.toml")
    c.check(text == EXAMPLE_CONFIG.read_text(), f"{rel(BASE / 'kbs.toml')} is identical to {rel(EXAMPLE_CONFIG)}")
    mount_paths = [m["mountPath"] for m in ct.get("volumeMounts", [])]
    c.check(data_dir is not None and data_dir in mount_paths, f"--data-dir {data_dir} is a writable volume")
    c.check("/tmp" in mount_paths, "/tmp is a writable volume")
    example = {d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {})) for d in secret_docs}
    for key, path in config_file_paths(cfg):
        src = provided(path, files)
        if src is not None and src[2] == "*":
            # A whole Secret is mounted: the example Secret documents the keys it must have.
            c.check(os.path.basename(path) in example.get(src[1], set()),
                    f"{key} = {path} is mounted (key {os.path.basename(path)} of Secret {src[1]}, as in "
                    f"{SECRET_EXAMPLE.name})")
        else:
            c.check(src is not None, f"{key} = {path} is mounted into the container")

    sockets = cfg.get("http_server", {}).get("sockets", [])
    c.check(any(s.rsplit(":", 1)[0] in ("0.0.0.0", "[::]") for s in sockets),
            f"http_server.sockets {sockets} listens on all interfaces (reachable from the Service)")
    c.check(any(int(s.rsplit(":", 1)[1]) == ports.get(target, target) for s in sockets),
            "http_server.sockets port equals the container port")

    scheme = "HTTP" if cfg.get("http_server", {}).get("insecure_http") else "HTTPS"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe == "startupProbe" and probe not in ct:
            continue
        hg = ct.get(probe, {}).get("httpGet", {})
        c.check(hg.get("path") == "/healthz", f"{probe} path is /healthz", f"found {hg.get('path')!r}")
        c.check(hg.get("scheme") == scheme, f"{probe} scheme is {scheme}", f"found {hg.get('scheme')!r}")
        c.check(hg.get("port") in ports or hg.get("port") in ports.values(), f"{probe} port is the container port")

    env = {e["name"]: e for e in ct.get("env", [])}
    pg_env = env.get("POSTGRES_URL", {})
    c.check("secretKeyRef" in pg_env.get("valueFrom", {}),
            "POSTGRES_URL comes from a Secret (no password in manifests)")

    # Every Secret the pod reads is described by secret.example.yaml, with the same keys.
    wanted: dict[str, set] = {}
    for kind, name, key in files.values():
        if kind == "Secret":
            wanted.setdefault(name, set()).update(set() if key == "*" else {key})
    for e in ct.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            wanted.setdefault(ref["name"], set()).add(ref["key"])
    for name, keys in sorted(wanted.items()):
        shown = sorted(keys) if keys else "(mounted whole)"
        c.check(name in example and keys <= example[name], f"Secret {name} {shown} is described in "
                f"{SECRET_EXAMPLE.name}", f"example has {sorted(example.get(name, []))}")
    for d in secret_docs:
        c.check(d["metadata"].get("namespace") in namespaces, f"example Secret {d['metadata']['name']} is in the "
                "broker's namespace")

    section(f"RuntimeClasses ({rel(RUNTIME_CLASSES)})")
    rcs = [d for d in rc_docs if d.get("kind") == "RuntimeClass"]
    handlers = {d.get("handler") for d in rcs}
    c.check(handlers == set(EXPECTED_HANDLERS) and len(rcs) == len(EXPECTED_HANDLERS),
            f"handlers are exactly {sorted(EXPECTED_HANDLERS)}", f"found {sorted(map(str, handlers))}")
    for d in rcs:
        h = d.get("handler")
        c.check(d["metadata"]["name"] == h, f"{h}: name equals handler")
        fixed = d.get("overhead", {}).get("podFixed", {})
        c.check("cpu" in fixed and "memory" in fixed, f"{h}: overhead.podFixed has cpu and memory")
        sel = d.get("scheduling", {}).get("nodeSelector", {})
        c.check(sel.get(RUNTIME_LABEL) == "true", f"{h}: nodeSelector requires {RUNTIME_LABEL}=true")
        tee = EXPECTED_HANDLERS.get(h)
        if tee:
            c.check(sel.get(tee) == "true", f"{h}: nodeSelector requires {tee}=true")


# ---------------------------------------------------------------------------------------------
# systemd


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; repeated keys are kept; continuation lines joined."""
    out, sect, pending = [], "", ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            sect = line[1:-1]
        elif "=" in line:
            k, v = line.split("=", 1)
            out.append((sect, k.strip(), v.strip()))
    return out


def check_systemd(c: Checker, ci: bool) -> None:
    section(f"systemd unit ({rel(UNIT)})")
    entries = parse_unit(UNIT.read_text())
    svc = {}
    for s, k, v in entries:
        if s == "Service":
            svc.setdefault(k, []).append(v)

    def one(k: str) -> str | None:
        return svc.get(k, [None])[-1]

    c.check(one("ExecStart") == EXPECTED_EXEC_START, "ExecStart runs the broker with kbs.toml and /var/lib data",
            f"found {one('ExecStart')!r}")
    c.check(any(v.lstrip("-") == "/etc/cloister-kbs/cloister-kbs.env" for v in svc.get("EnvironmentFile", [])),
            "EnvironmentFile is /etc/cloister-kbs/cloister-kbs.env")
    c.check(one("DynamicUser") == "yes" or (one("User") not in (None, "root", "0")), "runs as an unprivileged user")
    c.check(one("StateDirectory") == "cloister-kbs", "StateDirectory=cloister-kbs (/var/lib/cloister-kbs)")
    expected = {
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes", "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native",
    }
    for k, v in expected.items():
        c.check(k in svc and one(k) == v, f"{k}={v}", f"found {one(k)!r}")
    c.check(one("Restart") in ("on-failure", "always"), "restarts after a failure (e.g. PostgreSQL not up yet)")

    env = {}
    for raw in ENV_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            k, sep, v = line.partition("=")
            c.check(bool(sep) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", k) is not None,
                    f"{ENV_FILE.name}: {k or line!r} is a KEY=value line")
            env[k] = v
    c.check("CLOISTER_LOG" in env and "POSTGRES_URL" in env, f"{ENV_FILE.name} sets CLOISTER_LOG and POSTGRES_URL")

    try:
        cfg = tomllib.loads(EXAMPLE_CONFIG.read_text())
        c.check(True, f"{rel(EXAMPLE_CONFIG)} parses as TOML")
    except tomllib.TOMLDecodeError as e:
        c.check(False, f"{rel(EXAMPLE_CONFIG)} parses as TOML", str(e))
        cfg = None
    if cfg is not None:
        check_postgres_config(c, cfg, EXAMPLE_CONFIG.name)
        for key, path in config_file_paths(cfg):
            c.check(path.startswith("/etc/cloister-kbs/"), f"{key} = {path} is under /etc/cloister-kbs")

    sa = shutil.which("systemd-analyze")
    if sa is None:
        if ci:
            c.check(False, "systemd-analyze available", "CI is set and it is missing (Debian package: systemd)")
        else:
            c.skip("systemd-analyze verify / security", "systemd-analyze not installed (Debian package: systemd)")
        return
    # verify checks that ExecStart's binary exists: point it at a stub with the same arguments.
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "cloister-kbs"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        unit = Path(tmp) / UNIT.name
        unit.write_text(UNIT.read_text().replace("/usr/local/bin/cloister-kbs", str(stub)))
        r = subprocess.run([sa, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        ours = [ln for ln in (r.stdout + r.stderr).splitlines() if UNIT.name in ln or "cloister-kbs" in ln]
        c.check(r.returncode == 0 and not ours, "systemd-analyze verify: no errors or warnings",
                "; ".join(ours) or (r.stdout + r.stderr).strip())
        r = subprocess.run([sa, "security", "--offline=yes", f"--threshold={SECURITY_THRESHOLD}", str(unit)],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+ \w+)", r.stdout)
        score = m.group(1) if m else "no score"
        c.check(r.returncode == 0, f"systemd-analyze security --offline: exposure {score} (ceiling "
                f"{SECURITY_THRESHOLD / 10})", (r.stdout + r.stderr).strip()[-400:])


# ---------------------------------------------------------------------------------------------
# Container build


def dockerignore_excludes(pattern: str, path: str) -> bool:
    """Whether a .dockerignore pattern excludes `path` or one of its parent directories (a
    superset of Docker's matching: `*` may also cross '/', so this errs towards reporting)."""
    pattern = pattern.strip().lstrip("/")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    alts = {pattern, pattern.removeprefix("**/")}
    return any(fnmatch.fnmatchcase(p, a) for p in prefixes for a in alts)


def check_container(c: Checker) -> None:
    section(f"container build ({rel(CONTAINERFILE)}, .dockerignore)")
    text = CONTAINERFILE.read_text()
    c.check("cargo build --release -p cloister-kbs --locked" in text, "builds with cargo build --release -p "
            "cloister-kbs --locked")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    c.check(len(stages) >= 2, f"multi-stage build ({len(stages)} stages)")
    m = re.search(r"^ARG RUST_VERSION=(\S+)", text, re.M)
    toolchain = tomllib.loads((ROOT / "rust-toolchain.toml").read_text())["toolchain"]["channel"]
    c.check(m is not None and m.group(1) == toolchain, f"builder Rust version equals rust-toolchain.toml "
            f"({toolchain})", f"found {m.group(1) if m else None}")
    final = text[text.rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    c.check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), f"runtime stage runs as non-root "
            f"({users[-1] if users else 'no USER'})")
    ep = re.search(r"^ENTRYPOINT\s+(\[.*\])", final, re.M)
    binary = yaml.safe_load(ep.group(1))[0] if ep else None
    c.check(binary is not None and f" {binary}" in final, f"ENTRYPOINT {binary} is copied into the runtime stage")

    ignore = ROOT / ".dockerignore"
    if not c.check(ignore.exists(), ".dockerignore exists"):
        return
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    c.check(not any(p.startswith("!") for p in patterns), ".dockerignore has no re-include rules (kept simple)")
    try:
        tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                                 timeout=60).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError) as e:
        c.skip(".dockerignore excludes no tracked file", f"git ls-files failed: {e}")
        return
    hits = [f for f in tracked if f and any(dockerignore_excludes(p, f) for p in patterns)]
    c.check(not hits, f".dockerignore excludes none of the {len(tracked) - 1} tracked files (the build needs them)",
            ", ".join(hits[:5]))


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"), help="kubectl with `kustomize`")
    ap.add_argument("--kube-versions", default=os.environ.get("CLOISTER_KUBE_VERSIONS", "1.28.0,latest"),
                    help="Kubernetes versions whose schemas to validate against (comma-separated; 'latest' = "
                    "newest bundled)")
    args = ap.parse_args()
    latest = kv_utils.latest_version()
    versions = [latest if v.strip() == "latest" else v.strip() for v in args.kube_versions.split(",")]
    ci = bool(os.environ.get("CI"))

    c = Checker()
    docs = render_kustomization(c, args.kubectl)
    check_kubernetes(c, docs, versions)
    check_systemd(c, ci)
    check_container(c)

    total = c.passed + len(c.failed)
    skipped = f", {len(c.skipped)} skipped" if c.skipped else ""
    if c.failed:
        print(f"check-deploy: FAILED, {len(c.failed)} of {total} checks{skipped}:")
        for f in c.failed:
            print(f"  - {f}")
        return 1
    print(f"check-deploy: OK, all {total} checks{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
