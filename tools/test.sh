#!/usr/bin/env bash
# The test command of the README. Runs every test of the workspace, including the differential
# test against sev-snp-measure 0.0.13 (installed into a venv outside the checkout on first use).
#
#   CLOISTER_FIXTURES   shared fixtures (default: ../shared/fixtures beside the checkout)
#   SEV_SNP_MEASURE     path of the reference sev-snp-measure (default: installed on demand)
#   CLOISTER_DIFF_CASES number of randomised differential cases (default 60)
#   CLOISTER_PYTHON     python with `cryptography`, for the KBS interop peers in tests/interop
#                       (default: the venv below)
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloister-target}"
if [ -z "${CLOISTER_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
    CLOISTER_FIXTURES="$(realpath ../shared/fixtures)"
    export CLOISTER_FIXTURES
fi
[ -n "${CLOISTER_FIXTURES:-}" ] || echo "note: CLOISTER_FIXTURES unset; fixture tests will skip"

if [ -z "${SEV_SNP_MEASURE:-}" ]; then
    venv="${CLOISTER_VENV:-/var/tmp/cloister-venv}"
    if [ ! -x "$venv/bin/sev-snp-measure" ]; then
        echo "== installing sev-snp-measure 0.0.13 into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check sev-snp-measure==0.0.13
    fi
    export SEV_SNP_MEASURE="$venv/bin/sev-snp-measure"
fi
if [ -z "${CLOISTER_PYTHON:-}" ]; then
    venv="${CLOISTER_VENV:-/var/tmp/cloister-venv}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if ! "$venv/bin/python" -c 'import cryptography' 2>/dev/null; then
        echo "== installing cryptography into $venv (KBS interop peers)"
        "$venv/bin/pip" install -q --disable-pip-version-check 'cryptography>=42'
    fi
    export CLOISTER_PYTHON="$venv/bin/python"
fi
echo "== interop vectors (tests/interop/vectors.py)"
"$CLOISTER_PYTHON" tests/interop/vectors.py >/dev/null

echo "== deployment files (tools/check-deploy.sh)"
deploy_out="$(tools/check-deploy.sh 2>&1)" || { echo "$deploy_out"; exit 1; }
echo "$deploy_out" | tail -n 1

echo "== cargo test --workspace"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "cloister: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
