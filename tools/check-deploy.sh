#!/usr/bin/env bash
# Offline checks of the deployment files (deploy/, .dockerignore): renders the Kubernetes
# kustomization, validates every manifest against the Kubernetes JSON schemas, checks the
# invariants the key broker's deployment relies on, and verifies the systemd unit. The checks
# themselves are in tools/check_deploy.py; this script provides its tools:
#
#   python3 + venv  kubernetes-validate (bundles the schemas; brings PyYAML and jsonschema), installed
#                   on first use into $CLOISTER_VENV (default /var/tmp/cloister-venv, as tools/test.sh)
#   kubectl         $KUBECTL if set; else Debian's kubernetes-client, fetched once with
#                   `apt-get download` and unpacked (not installed) into /var/tmp/cloister-kubectl,
#                   so it never conflicts with another package's /usr/bin/kubectl; else `kubectl`
#                   from PATH
#   systemd-analyze optional (Debian package systemd); required when CI is set
#
# Nothing is contacted but the package registries, and only on first use. Exit status 0 when every
# check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CLOISTER_VENV:-/var/tmp/cloister-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "== installing kubernetes-validate into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi

kubectl_can_kustomize() { [ -n "$1" ] && "$1" kustomize --help >/dev/null 2>&1; }

kubectl="${KUBECTL:-}"
if [ -z "$kubectl" ]; then
    kdir=/var/tmp/cloister-kubectl
    if ! kubectl_can_kustomize "$kdir/root/usr/bin/kubectl"; then
        echo "== fetching Debian's kubernetes-client into $kdir (unpacked, not installed)"
        (
            set -e
            rm -rf "$kdir" && mkdir -p "$kdir" && cd "$kdir"
            apt-get download -q kubernetes-client >/dev/null 2>&1
            dpkg-deb -x kubernetes-client_*.deb root
            rm -f kubernetes-client_*.deb
        ) || echo "note: could not fetch kubernetes-client (run apt-get update?)"
    fi
    if kubectl_can_kustomize "$kdir/root/usr/bin/kubectl"; then
        kubectl="$kdir/root/usr/bin/kubectl"
    elif kubectl_can_kustomize "$(command -v kubectl || true)"; then
        kubectl="$(command -v kubectl)"
    else
        echo "check-deploy: no kubectl with 'kustomize' (set KUBECTL, or make apt-get download work)" >&2
        exit 1
    fi
fi
echo "kubectl: $kubectl ($("$kubectl" version --client 2>/dev/null | head -1))"

exec "$venv/bin/python" tools/check_deploy.py --kubectl "$kubectl" "$@"
