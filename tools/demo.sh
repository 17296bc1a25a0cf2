#!/usr/bin/env bash
# The Cloister demo: a confidential pod whose encrypted image opens only after attestation.
#
# Runs on one machine, on loopback, with the EMULATED SEV-SNP platform (no TEE hardware needed;
# emulated evidence proves nothing about hardware, and only a policy naming the emulated root
# accepts it). Each step is a command a tenant or an operator would run; each is timed:
#
#   1. the guest image (Debian cloud kernel + initrd with the static agent), and its launch
#      measurement with `cloister measure`                                  (tenant, offline)
#   2. an image with a confidential file, encrypted with skopeo (JWE) and re-wrapped so that its
#      layer key is the key broker resource default/key/image-kek           (tenant)
#   3. cloister-kbs on embedded defaults + the emulated root; the KEK, policies and reference
#      values (measurement, initdata digest) set with `cloister kbs config`  (tenant)
#   4. containerd 1.6 with containerd-shim-cloister-v2                        (operator)
#   5. `ctr run` of the pod: VM boot, attestation, key release, pull + decrypt, container start
#      (the shim's step timings), then a tampered launch that gets nothing
#
# Usage: sudo tools/demo.sh [--keep]     (--keep leaves the work directory for inspection)
# Needs: root, containerd, ctr, docker-registry, skopeo, umoci, openssl, qemu-system-x86_64, python3,
# and what runtime/guest/build.sh needs (see .ci/run); $CLOISTER_FIXTURES (default
# ../shared/fixtures) for firmware/debian-sid/OVMF.amdsev.fd, the firmware the emulated
# measurement is computed against. Timings are written to $CLOISTER_DEMO_TIMINGS (default
# /tmp/cloister-demo-timings.json).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
keep=false
[ "${1:-}" = "--keep" ] && keep=true

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/cloister-target}"
fixtures="${CLOISTER_FIXTURES:-$(realpath -m ../shared/fixtures)}"
ovmf="$fixtures/firmware/debian-sid/OVMF.amdsev.fd"
bin="$CARGO_TARGET_DIR/debug"
work="$(mktemp -d /tmp/cloister-demo.XXXXXX)"
timings_out="${CLOISTER_DEMO_TIMINGS:-/tmp/cloister-demo-timings.json}"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if $keep; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (containerd)"
for t in containerd ctr docker-registry skopeo umoci openssl qemu-system-x86_64 python3; do
    command -v "$t" >/dev/null || die "$t not installed (apt-get install containerd docker-registry skopeo umoci openssl qemu-system-x86 python3)"
done
[ -f "$ovmf" ] || die "$ovmf missing (set CLOISTER_FIXTURES)"

declare -A took
t0=0
step() { t0=$(date +%s%N); printf '\n== %s\n' "$1"; }
done_step() {
    local ms=$((($(date +%s%N) - t0) / 1000000))
    took[$1]=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
    printf '   %s: %ss\n' "$1" "${took[$1]}"
}

step "0. build the binaries (cargo build)"
cargo build -q --locked --bins -p cloister -p cloister-kbs -p cloister-shim
cloister="$bin/cloister"
done_step build

step "1. guest image and its launch measurement (tenant, offline)"
kdeb="${CLOISTER_TEST_KERNEL_DEB:-$(ls /var/tmp/cloister-ci-kernel/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1 || true)}"
guest="$work/guest"
runtime/guest/build.sh --out "$guest" ${kdeb:+--kernel-deb "$kdeb"} --firmware none \
    --agent-arg=--insecure-registry=127.0.0.1:* --agent-arg=--registry-loopback-via=10.0.2.2 >"$work/guest-build.log" 2>&1 \
    || { tail -20 "$work/guest-build.log"; die "guest image build failed"; }
cmdline=$(cat "$guest/cmdline.txt")
"$cloister" measure --mode snp --vcpus 1 --vcpu-type EPYC-v4 --ovmf "$ovmf" --kernel "$guest/vmlinux" \
    --initrd "$guest/initrd.img" --append "$cmdline" --output json >"$work/measure.json"
echo "   launch measurement: $(sed -n 's/.*"measurement": *"\([0-9a-f]*\)".*/\1/p' "$work/measure.json" | head -1)"
done_step guest_image

step "2. the tenant's image: encrypted, its layer key wrapped by a KBS resource"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg="127.0.0.1:$port"
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: %s}\n' "$work/reg" "$reg" >"$work/reg.yml"
docker-registry serve "$work/reg.yml" >/dev/null 2>&1 & pids+=($!)
rootfs="$work/rootfs"
mkdir -p "$rootfs/bin" "$rootfs/app"
cp /bin/busybox "$rootfs/bin/busybox"
for a in sh cat echo ls; do ln -s busybox "$rootfs/bin/$a"; done
echo "hello from a confidential pod: this text was encrypted until the guest attested" >"$rootfs/app/message.txt"
umoci init --layout "$work/oci" && umoci new --image "$work/oci:v1"
umoci insert --image "$work/oci:v1" "$rootfs" / >/dev/null
openssl genrsa -out "$work/rsa.pem" 2048 2>/dev/null
openssl rsa -pubout -in "$work/rsa.pem" -out "$work/rsa.pub" 2>/dev/null
skopeo --insecure-policy copy -q --encryption-key "jwe:$work/rsa.pub" "oci:$work/oci:v1" "oci:$work/enc:v1"
head -c 32 /dev/urandom >"$work/kek.bin"
"$cloister" image rewrap "$work/enc:v1" --decryption-key "$work/rsa.pem" --kek "$work/kek.bin" \
    --kid kbs:///default/key/image-kek
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$work/enc:v1" "docker://$reg/tenant/secret:v1"
image="$reg/tenant/secret:v1"
echo "   pushed $image (encrypted; the registry and the host never see the plaintext)"
done_step encrypted_image

step "3. the key broker: embedded defaults, emulated root, KEK, policies, reference values"
"$cloister" emulate init --dir "$work/platform" >/dev/null
{ printf '[http_server]\nsockets = ["127.0.0.1:0"]\ninsecure_http = true\n'; "$cloister" emulate kbs-config --dir "$work/platform"; } >"$work/kbs.toml"
"$bin/cloister-kbs" --config-file "$work/kbs.toml" --data-dir "$work/kbs-data" --admin-key-out "$work/admin.pem" \
    >"$work/kbs.out" 2>"$work/kbs.log" & pids+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$work/kbs.out" && break; sleep 0.1; done
kbs=$(sed -n 's/^listening on //p' "$work/kbs.out")
[ -n "$kbs" ] || { cat "$work/kbs.log"; die "cloister-kbs did not start"; }
kbs_port=${kbs##*:}
admin() { "$cloister" kbs --url "$kbs" config --admin-key "$work/admin.pem" "$@" >/dev/null; }
admin set-resource --path default/key/image-kek --resource-file "$work/kek.bin"
admin set-attestation-policy --policy-file policies/attestation/emulated_cpu.rego
admin set-resource-policy --policy-file policies/resource/emulated.rego
admin set-reference-values --file "$work/measure.json"
# Initdata: where the key broker is, and the agent policy (only this image; no exec).
data=$(printf '{"allowed_images":["%s"],"allowed_env":["PATH=.*","HOSTNAME=.*","TERM=.*"]}' "$image")
{
    printf 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"cdh.toml" = '"'''"'\n[kbc]\nname = "cc_kbc"\nurl = "http://10.0.2.2:%s"\n'"'''"'\n' "$kbs_port"
    printf '"policy.rego" = '"'''"'\n'
    sed "s|policy_data := data.policy_data|policy_data := $data|" policies/agent/confidential.rego
    printf "'''\n"
} >"$work/initdata.toml"
admin set-sample-reference-value init_data "$("$cloister" initdata digest --hex "$work/initdata.toml")"
annotation=$("$cloister" initdata annotation --with-name "$work/initdata.toml")
echo "   $kbs: KEK at default/key/image-kek, emulated_cpu + emulated policies, measurement and initdata digest"
done_step key_broker

step "4. containerd with containerd-shim-cloister-v2"
sock="$work/containerd.sock"
cat >"$work/containerd.toml" <<EOF
version = 2
root = "$work/containerd-root"
state = "$work/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
address = "$sock"
[ttrpc]
address = "$sock.ttrpc"
[debug]
level = "debug"
EOF
PATH="$bin:$PATH" containerd --config "$work/containerd.toml" >/dev/null 2>"$work/containerd.log" & pids+=($!)
for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
cat >"$work/cloister-emulated-snp.toml" <<EOF
[guest]
kernel = "$guest/vmlinux"
initrd = "$guest/initrd.img"
cmdline = "$cmdline"
[vm]
tee = "emulated-snp"
accel = "tcg"
memory_mib = 512
run_root = "$work/vm"
[emulated]
platform_dir = "$work/platform"
reference_firmware = "$ovmf"
EOF
sed "s|^cmdline = \"\(.*\)\"|cmdline = \"\1 tampered=1\"|" "$work/cloister-emulated-snp.toml" >"$work/tampered.toml"
mkdir -p "$work/empty"
done_step containerd

pod() { # config id
    ctr --address "$sock" -n demo run --rm --runtime io.containerd.cloister.v2 --runtime-config-path "$1" \
        --annotation "io.kubernetes.cri.image-name=$image" --annotation "$annotation" \
        --rootfs "$work/empty" "$2" /bin/cat /app/message.txt
}

step "5. the confidential pod: ctr run → VM → attestation → key release → pull + decrypt → run"
out=$(pod "$work/cloister-emulated-snp.toml" demo-pod) || { tail -30 "$work/containerd.log"; die "the pod failed"; }
echo "   output: $out"
done_step pod_total
timings=$(grep 'pod step timings' "$work/containerd.log" | grep 'container=demo-pod ' | tail -1 \
    | sed 's/\\"/"/g; s/.*timings=\({[^}]*}\).*/\1/')
python3 - "$timings" "${took[pod_total]}" <<'EOF'
import json, sys
t = json.loads(sys.argv[1]); total = float(sys.argv[2])
rows = [("VM boot (QEMU TCG → agent ready)", "vm_boot_s"), ("attestation (evidence, /auth, /attest)", "attestation_s"),
        ("key release (KEK from the broker)", "key_release_s"), ("image pull + decrypt + unpack", "image_pull_s"),
        ("container create (incl. the three above)", "container_create_s")]
for label, k in rows:
    print(f"   {label:45s} {t.get(k, float('nan')):6.2f}s")
start = total - t.get("vm_boot_s", 0) - t.get("container_create_s", 0)
print(f"   {'container run, VM shutdown, containerd + ctr':45s} {start:6.2f}s")
EOF

step "6. a tampered launch (another kernel command line): no key, and ctr says why"
if pod "$work/tampered.toml" demo-tampered 2>"$work/tampered.err"; then die "the tampered pod ran"; fi
echo "   refused: $(grep -o 'attestation to the key broker failed.*' "$work/tampered.err" | cut -c1-200)"
done_step tampered

printf '{"steps_s":%s,"pod_total_s":%s,"build_s":%s,"guest_image_s":%s,"encrypted_image_s":%s,"key_broker_s":%s,"containerd_s":%s,"tampered_s":%s}\n' \
    "${timings:-null}" "${took[pod_total]}" "${took[build]}" "${took[guest_image]}" "${took[encrypted_image]}" \
    "${took[key_broker]}" "${took[containerd]}" "${took[tampered]}" >"$timings_out"
echo; echo "timings: $timings_out"; cat "$timings_out"
