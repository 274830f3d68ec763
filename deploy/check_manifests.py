#!/usr/bin/env python3
"""Checks deploy/ against the binary and against itself (run by deploy/validate.sh).

1. Every environment variable that the Dockerfile (final stage), deploy/compose.yaml (services
   that run the Zeta image) or deploy/k8s/*.yaml (ConfigMap/Secret keys, which reach the pods
   through envFrom, and container env of Zeta containers) sets is one the binary accepts: an
   `[env: NAME…]` of `zeta --help`, `zeta serve --help` or `zeta migrate --help`, or RUST_LOG.
2. The manifests agree with each other: green is blue with the colour changed, the Service
   selects app=zeta,color=blue, the HPA targets a Deployment that exists, probes and security
   context are as deploy/README.md says, grace periods exceed the shutdown timeout, envFrom
   references exist, and the compose stack migrates before serving.

usage: check_manifests.py ZETA_BINARY [REPO_ROOT]
Needs PyYAML (yamllint depends on it). Exit 0 when everything holds, 1 otherwise.
"""

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

EXTRA_ALLOWED = {"RUST_LOG"}
HELP_COMMANDS = [["--help"], ["serve", "--help"], ["migrate", "--help"]]
ENV_RE = re.compile(r"\[env:\s*([A-Za-z_][A-Za-z0-9_]*)")

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"  FAIL {message}")


def ok(message: str) -> None:
    print(f"  ok   {message}")


def accepted_env(binary: str) -> set[str]:
    names: set[str] = set()
    for args in HELP_COMMANDS:
        run = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            fail(f"`zeta {' '.join(args)}` exited {run.returncode}: {run.stderr.strip()[:200]}")
            continue
        names.update(ENV_RE.findall(run.stdout))
    if "DATABASE_URL" not in names or "ZETA_LISTEN" not in names:
        fail(f"the help text lists no DATABASE_URL/ZETA_LISTEN; parsed: {sorted(names)}")
    return names | EXTRA_ALLOWED


# ---------------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def env_names_of(args: str) -> list[str]:
    tokens = shlex.split(args)
    if len(tokens) >= 2 and "=" not in tokens[0]:
        return [tokens[0]]  # legacy `ENV NAME value`
    return [t.split("=", 1)[0] for t in tokens]


def check_dockerfile(path: Path) -> list[tuple[str, str]]:
    stage = final_stage(dockerfile_instructions(path))
    found = []
    for word, args in stage:
        if word == "ENV":
            found += [(name, f"{path.name} ENV") for name in env_names_of(args)]
    user = [args for word, args in stage if word == "USER"]
    if user and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user[-1]):
        ok(f"Dockerfile runs as numeric non-root user {user[-1]}")
    else:
        fail(f"Dockerfile's final stage must set a numeric non-root USER (got {user})")
    entry = [args for word, args in stage if word == "ENTRYPOINT"]
    if entry and entry[-1] == '["/usr/local/bin/zeta"]':
        ok("Dockerfile ENTRYPOINT is /usr/local/bin/zeta")
    else:
        fail(f'Dockerfile ENTRYPOINT must be ["/usr/local/bin/zeta"] (got {entry})')
    if any(word == "HEALTHCHECK" for word, _ in stage):
        ok("Dockerfile has a HEALTHCHECK")
    else:
        fail("Dockerfile's final stage has no HEALTHCHECK")
    return found


# ---------------------------------------------------------------------------------------------
# compose


def duration_secs(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(h|ms|m|s|us)", str(value)):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def is_zeta_service(service: dict) -> bool:
    return "build" in service or "zeta" in str(service.get("image", "")).split("/")[-1]


def env_keys(environment) -> list[str]:
    if isinstance(environment, dict):
        return list(environment)
    return [str(item).split("=", 1)[0] for item in environment or []]


def check_compose(path: Path, shutdown_default: int) -> list[tuple[str, str]]:
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    found = []
    for name, service in services.items():
        if not is_zeta_service(service):
            continue
        found += [(key, f"compose.yaml service {name}") for key in env_keys(service.get("environment"))]
    api, migrate = services.get("api", {}), services.get("migrate", {})
    if migrate.get("command") == ["migrate"]:
        ok("compose: service migrate runs `zeta migrate`")
    else:
        fail("compose: service migrate must run command [migrate]")
    condition = api.get("depends_on", {}).get("migrate", {}).get("condition")
    if condition == "service_completed_successfully":
        ok("compose: api waits for migrate to complete successfully")
    else:
        fail(f"compose: api must depend on migrate with service_completed_successfully ({condition})")
    pg_condition = api.get("depends_on", {}).get("postgres", {}).get("condition")
    if pg_condition != "service_healthy" or "healthcheck" not in services.get("postgres", {}):
        fail("compose: postgres needs a healthcheck and api must wait for it to be healthy")
    timeout = int(str(api.get("environment", {}).get("ZETA_SHUTDOWN_TIMEOUT_SECS", shutdown_default)))
    grace = duration_secs(api.get("stop_grace_period", "10s"))
    if grace > timeout:
        ok(f"compose: stop_grace_period {grace:g}s > ZETA_SHUTDOWN_TIMEOUT_SECS {timeout}s")
    else:
        fail(f"compose: stop_grace_period {grace:g}s must exceed ZETA_SHUTDOWN_TIMEOUT_SECS {timeout}s")
    if api.get("environment", {}).get("ZETA_LISTEN") == "0.0.0.0:8080":
        ok("compose: api listens on 0.0.0.0:8080")
    else:
        fail("compose: api must set ZETA_LISTEN=0.0.0.0:8080")
    return found


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_k8s(directory: Path) -> dict[str, list[dict]]:
    docs: dict[str, list[dict]] = {}
    for path in sorted(directory.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") in ("Deployment", "Job", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc.get("kind") == "Pod":
        return doc["spec"]
    return None


def zeta_containers(spec: dict) -> list[dict]:
    return [
        c
        for c in spec.get("containers", []) + spec.get("initContainers", [])
        if "zeta" in str(c.get("image", "")).split("/")[-1]
    ]


def recolor(value, old: str, new: str):
    if isinstance(value, dict):
        return {recolor(k, old, new): recolor(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [recolor(v, old, new) for v in value]
    if isinstance(value, str):
        return value.replace(old, new)
    return value


def check_security(where: str, spec: dict, container: dict) -> None:
    pod_sc = spec.get("securityContext", {})
    sc = {**pod_sc, **container.get("securityContext", {})}
    problems = []
    if sc.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot")
    if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
        problems.append("runAsUser (numeric, non-zero)")
    csc = container.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation: false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities.drop ALL")
    if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile RuntimeDefault")
    if problems:
        fail(f"{where}: securityContext lacks {', '.join(problems)}")
    else:
        ok(f"{where}: securityContext non-root, read-only, no escalation, caps dropped, seccomp")


def check_k8s(directory: Path, shutdown_default: int) -> list[tuple[str, str]]:
    docs = load_k8s(directory)
    found: list[tuple[str, str]] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for file, items in docs.items():
        for doc in items:
            by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
            if doc["kind"] == "ConfigMap":
                found += [(k, f"{file} ConfigMap {doc['metadata']['name']}") for k in doc.get("data", {})]
            if doc["kind"] == "Secret":
                keys = list(doc.get("stringData", {})) + list(doc.get("data", {}))
                found += [(k, f"{file} Secret {doc['metadata']['name']}") for k in keys]
            spec = pod_spec(doc)
            for container in zeta_containers(spec) if spec else []:
                found += [(e["name"], f"{file} container {container['name']}") for e in container.get("env", [])]

    configmaps, secrets = by_kind.get("ConfigMap", {}), by_kind.get("Secret", {})
    shutdown = shutdown_default
    for cm in configmaps.values():
        shutdown = int(cm.get("data", {}).get("ZETA_SHUTDOWN_TIMEOUT_SECS", shutdown))

    # envFrom / valueFrom references resolve to objects defined here.
    for file, items in docs.items():
        for doc in items:
            spec = pod_spec(doc)
            for container in zeta_containers(spec) if spec else []:
                for ref in container.get("envFrom", []):
                    if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
                        fail(f"{file}: envFrom ConfigMap {ref['configMapRef']['name']} is not defined")
                    if "secretRef" in ref and ref["secretRef"]["name"] not in secrets:
                        fail(f"{file}: envFrom Secret {ref['secretRef']['name']} is not defined")
                check_security(f"{file} {doc['kind']} {doc['metadata']['name']}", spec, container)

    deployments = by_kind.get("Deployment", {})
    blue, green = deployments.get("zeta-blue"), deployments.get("zeta-green")
    if not blue or not green:
        fail("Deployments zeta-blue and zeta-green must both exist")
        return found
    if recolor(copy.deepcopy(blue), "blue", "green") == green:
        ok("deployment-green.yaml is deployment-blue.yaml with the colour changed")
    else:
        fail("deployment-green.yaml differs from deployment-blue.yaml by more than the colour")

    for color, dep in (("blue", blue), ("green", green)):
        name = dep["metadata"]["name"]
        want = {"app": "zeta", "color": color}
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if dep["spec"]["selector"]["matchLabels"] == want and want.items() <= labels.items():
            ok(f"{name}: selector and pod labels app=zeta,color={color}")
        else:
            fail(f"{name}: selector/pod labels must be app=zeta,color={color}")
        if "replicas" in dep["spec"]:
            fail(f"{name}: spec.replicas must be absent (the HPA / bluegreen.sh own it)")
        spec = dep["spec"]["template"]["spec"]
        (container,) = zeta_containers(spec)
        probes = {
            "readinessProbe": "/health/ready",
            "livenessProbe": "/health/live",
            "startupProbe": "/health/",
        }
        for probe, path in probes.items():
            got = container.get(probe, {}).get("httpGet", {}).get("path", "")
            if not got.startswith(path):
                fail(f"{name}: {probe} must be an httpGet on {path} (got {got or 'none'})")
        res = container.get("resources", {})
        if not (res.get("requests") and res.get("limits")):
            fail(f"{name}: resources need requests and limits")
        sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace > shutdown + sleep:
            ok(f"{name}: terminationGracePeriodSeconds {grace} > preStop {sleep} + shutdown {shutdown}")
        else:
            fail(f"{name}: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} + shutdown {shutdown}")

    service = by_kind.get("Service", {}).get("zeta")
    if service and service["spec"].get("selector") == {"app": "zeta", "color": "blue"}:
        ok("Service zeta selects app=zeta,color=blue")
    else:
        fail("Service zeta must select app=zeta,color=blue")
    hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("zeta")
    target = (hpa or {}).get("spec", {}).get("scaleTargetRef", {})
    if target.get("kind") == "Deployment" and target.get("name") in deployments:
        ok(f"HPA zeta scales Deployment {target['name']}")
    else:
        fail(f"HPA zeta must target one of the Deployments (got {target})")
    if not by_kind.get("PodDisruptionBudget"):
        fail("no PodDisruptionBudget")
    jobs = by_kind.get("Job", {})
    if any(c.get("args") == ["migrate"] for j in jobs.values() for c in zeta_containers(pod_spec(j))):
        ok("a Job runs `zeta migrate`")
    else:
        fail("no Job runs `zeta migrate`")
    return found


def check_dockerignore(path: Path) -> None:
    lines = {line.strip() for line in path.read_text().splitlines()} if path.exists() else set()
    missing = [p for p in ("target/", ".git/", "*.db") if p not in lines]
    if missing:
        fail(f".dockerignore must exclude {missing}")
    else:
        ok(".dockerignore excludes target/, .git/, *.db")


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    binary = sys.argv[1]
    root = Path(sys.argv[2] if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent)
    deploy = root / "deploy"

    print("consistency of deploy/:")
    allowed = accepted_env(binary)
    shutdown_default = 30
    found = check_dockerfile(deploy / "Dockerfile")
    found += check_compose(deploy / "compose.yaml", shutdown_default)
    found += check_k8s(deploy / "k8s", shutdown_default)
    check_dockerignore(root / ".dockerignore")

    print(f"environment variables ({len(allowed)} accepted by the binary):")
    for name in sorted({n for n, _ in found}):
        where = sorted({w for n, w in found if n == name})
        if name in allowed:
            ok(f"{name}  ({len(where)} place{'s' if len(where) > 1 else ''})")
        else:
            fail(f"{name} is set in {', '.join(where)} but `zeta --help` does not list it")
    if failures:
        print(f"{len(failures)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
