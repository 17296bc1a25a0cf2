#!/usr/bin/env bash
# Whole-process comparison: `cloister measure` against sev-snp-measure 0.0.13 on the same inputs,
# with hyperfine (apt install hyperfine). Prints each pair and the speed-up ratio.
#
#   CLOISTER_FIXTURES  shared fixtures (default ../shared/fixtures)
#   SEV_SNP_MEASURE    reference tool (default /var/tmp/cloister-venv/bin/sev-snp-measure)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloister-target}"
fx="${CLOISTER_FIXTURES:-$(realpath ../shared/fixtures)}"
ref="${SEV_SNP_MEASURE:-/var/tmp/cloister-venv/bin/sev-snp-measure}"
[ -x "$ref" ] || { echo "reference tool not found at $ref (run tools/test.sh once, or set SEV_SNP_MEASURE)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine is required (apt install hyperfine)" >&2; exit 1; }
cargo build --release -q -p cloister
ours="$CARGO_TARGET_DIR/release/cloister measure"
fw="$fx/firmware"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A 14 MiB "kernel" and 4 MiB "initrd" (contents do not matter: only their SHA-256 is measured).
head -c $((14 << 20)) /dev/urandom > "$tmp/kernel"
head -c $((4 << 20)) /dev/urandom > "$tmp/initrd"

cases=(
  "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf $fw/debian-bookworm/OVMF.fd"
  "--mode snp --vcpus 4 --vcpu-type EPYC-Genoa --ovmf $fw/debian-sid/OVMF.amdsev.fd --kernel $tmp/kernel --initrd $tmp/initrd --append console=ttyS0"
  "--mode snp --vcpus 64 --vcpu-type EPYC-Milan --ovmf $fw/debian-sid/OVMF.amdsev.fd"
  "--mode seves --vcpus 2 --vcpu-type EPYC-Rome --ovmf $fw/debian-bookworm/OVMF.fd"
)
for c in "${cases[@]}"; do
  echo "== $c"
  hyperfine -N --warmup 3 --min-runs 20 --export-json "$tmp/r.json" "$ours $c" "$ref $c" >/dev/null
  python3 - "$tmp/r.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
a, b = r[0], r[1]
print(f"  cloister        {a['mean']*1e3:8.2f} ms ± {a['stddev']*1e3:.2f}  (min {a['min']*1e3:.2f})")
print(f"  sev-snp-measure {b['mean']*1e3:8.2f} ms ± {b['stddev']*1e3:.2f}  (min {b['min']*1e3:.2f})")
print(f"  speed-up        {b['mean']/a['mean']:8.1f}x (mean)   {b['min']/a['min']:.1f}x (min)")
PY
done
