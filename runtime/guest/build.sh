#!/usr/bin/env bash
# Builds the Cloister guest image from Debian packages, reproducibly:
#
#   <out>/vmlinux          the cloud kernel, uncompressed ELF (PVH direct boot: runtime.md §5.2)
#   <out>/initrd.img       zstd-compressed newc cpio: busybox, virtio modules, the static agent,
#                          its policy, /init (runtime/guest/init)
#   <out>/cmdline.txt      the kernel command line the image expects (no trailing newline)
#   <out>/measurements.json  SEV-SNP launch digest of kernel + initrd + cmdline with OVMF, as
#                          `cloister measure` computes it (same inputs as the launcher's
#                          expected_measurement for a VmConfig with these files)
#   <out>/SHA256SUMS       digests of the above
#
# Usage: runtime/guest/build.sh [options]   (see --help). Needs: dpkg-deb, apt-get (only to
# download the kernel), lz4/xz/zstd/gzip (kernel decompression), cpio, zstd, busybox-static,
# cargo with the x86_64-unknown-linux-musl target and musl-tools (to build the agent).
# Reproducible: every input is pinned by content; file times are SOURCE_DATE_EPOCH (default 0),
# entries are sorted, owners are 0:0, inode numbers sequential (cpio --reproducible).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/runtime/guest"

out=
kernel_deb=
agent=
policy=allow-all
policy_data=
firmware=/usr/share/ovmf/OVMF.fd
vcpus=1
vcpu_type=EPYC-v4
local_images=()
extra_agent_args=()
cmdline="console=ttyS0 panic=-1 no_timer_check rdinit=/init quiet"

usage() {
    cat <<EOF
Usage: $0 --out DIR [options]

  --out DIR            output directory (created)
  --kernel-deb FILE    Debian linux-image-*-cloud-amd64 .deb (default: apt-get download of the
                       package linux-image-cloud-amd64 currently depends on)
  --agent FILE         static cloister-agent binary (default: cargo build --release
                       --target x86_64-unknown-linux-musl -p cloister-agent)
  --policy P           allow-all (default) | confidential | a .rego file
  --policy-data FILE   JSON given to the policy as data.policy_data
  --local-image NAME=DIR
                       bake the root filesystem DIR into /images/NAME and start the agent with
                       --local-images /images (tests; may be repeated)
  --agent-arg ARG      an extra argument for the agent (may be repeated), e.g.
                       --agent-arg=--insecure-loopback-registries for tests
  --cmdline STR        kernel command line (default: "$cmdline")
  --firmware FILE      OVMF for the SNP measurement (default: $firmware; "none" skips it)
  --vcpus N            vCPUs for the measurement (default: $vcpus)
  --vcpu-type T        launch CPU model for the measurement (default: $vcpu_type)

Environment: SOURCE_DATE_EPOCH (file times, default 0), CARGO_TARGET_DIR (agent build),
CLOISTER (a built \`cloister\` binary for the measurement; default: cargo run -p cloister).
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --kernel-deb) kernel_deb=$2; shift 2 ;;
        --agent) agent=$2; shift 2 ;;
        --policy) policy=$2; shift 2 ;;
        --policy-data) policy_data=$2; shift 2 ;;
        --local-image) local_images+=("$2"); shift 2 ;;
        --agent-arg) extra_agent_args+=("$2"); shift 2 ;;
        --agent-arg=*) extra_agent_args+=("${1#--agent-arg=}"); shift ;;
        --cmdline) cmdline=$2; shift 2 ;;
        --firmware) firmware=$2; shift 2 ;;
        --vcpus) vcpus=$2; shift 2 ;;
        --vcpu-type) vcpu_type=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || { usage >&2; exit 2; }
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
export LC_ALL=C TZ=UTC

case "$policy" in
    allow-all) policy_file="$repo/policies/agent/allow_all.rego" ;;
    confidential) policy_file="$repo/policies/agent/confidential.rego" ;;
    *) policy_file=$policy ;;
esac
[ -f "$policy_file" ] || { echo "policy $policy_file not found" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/cloister-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 1. The kernel package -----------------------------------------------------------------------
if [ -z "$kernel_deb" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    [ -n "$pkg" ] || { echo "cannot resolve linux-image-cloud-amd64 (apt-get update?)" >&2; exit 1; }
    echo "== downloading $pkg"
    (cd "$work" && apt-get download -q "$pkg" >/dev/null)
    kernel_deb=$(ls "$work/${pkg}"_*.deb)
fi
echo "== kernel package: $kernel_deb"
dpkg-deb -x "$kernel_deb" "$work/kpkg"
vmlinuz=$(ls "$work"/kpkg/boot/vmlinuz-*)
kver=${vmlinuz##*/vmlinuz-}
moddir="$work/kpkg/lib/modules/$kver"

# --- 2. vmlinux: the uncompressed ELF inside the bzImage -----------------------------------------
# The bzImage's payload is one compressed stream; find its magic and decompress from there until
# the result is an ELF file (the same idea as the kernel's scripts/extract-vmlinux).
try_decompress() { # magic (grep -P bytes), decompressor command
    local off
    for off in $(grep -aboP "$1" "$vmlinuz" | cut -d: -f1); do
        tail -c +$((off + 1)) "$vmlinuz" | $2 >"$work/vmlinux" 2>/dev/null || true
        if [ "$(head -c 4 "$work/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
            return 0
        fi
    done
    return 1
}
try_decompress '\x02\x21\x4c\x18' 'lz4 -dc' ||
    try_decompress '\x28\xb5\x2f\xfd' 'zstd -dcq' ||
    try_decompress '\xfd\x37\x7a\x58\x5a\x00' 'xz -dc' ||
    try_decompress '\x1f\x8b\x08' 'gzip -dc' ||
    { echo "no compressed ELF kernel found in $vmlinuz" >&2; exit 1; }
# PVH direct boot needs the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (Debian sets CONFIG_PVH=y).
grep -q '^CONFIG_PVH=y' "$work/kpkg/boot/config-$kver" || echo "warning: kernel without CONFIG_PVH" >&2
cp "$work/vmlinux" "$out/vmlinux"

# --- 3. The agent --------------------------------------------------------------------------------
if [ -z "$agent" ]; then
    echo "== building cloister-agent (release, x86_64-unknown-linux-musl)"
    (cd "$repo" && cargo build -q --locked --release --target x86_64-unknown-linux-musl -p cloister-agent)
    agent="${CARGO_TARGET_DIR:-$repo/target}/x86_64-unknown-linux-musl/release/cloister-agent"
fi
# A dynamically linked agent would not run in the initrd (no libc there): require a 64-bit ELF
# without a PT_INTERP (3) program header.
le() { od -An -t"u$2" -j "$1" -N "$2" "$agent" | tr -d ' '; } # little-endian field at offset
[ "$(od -An -tx1 -N 5 "$agent" | tr -d ' \n')" = 7f454c4602 ] || { echo "$agent: not a 64-bit ELF" >&2; exit 1; }
phoff=$(le 32 8) phentsize=$(le 54 2) phnum=$(le 56 2)
for ((i = 0; i < phnum; i++)); do
    if [ "$(le $((phoff + i * phentsize)) 4)" = 3 ]; then
        echo "$agent is dynamically linked (build it for x86_64-unknown-linux-musl)" >&2; exit 1
    fi
done

# --- 4. The initrd tree --------------------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,dev,etc/cloister,images,lib/modules/"$kver",newroot,proc,run,sys,tmp}
install -m 0755 "$here/init" "$root/init"
install -m 0755 /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list | sort); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 "$agent" "$root/bin/cloister-agent"
install -m 0644 "$policy_file" "$root/etc/cloister/policy.rego"
[ -z "$policy_data" ] || install -m 0644 "$policy_data" "$root/etc/cloister/policy-data.json"

# Modules: virtio-serial (virtio_console) and the PCI transport, plus vsock over virtio for later.
# The .deb has no modules.dep (depmod runs at install time), so resolve dependencies from each
# module's `depends=` field; skip what the kernel has built in (modules.builtin).
declare -A modpath=() loaded=()
while IFS= read -r f; do
    n=${f##*/}; n=${n%.ko}; modpath[${n//-/_}]=${f#"$moddir"/}
done < <(find "$moddir/kernel" -name '*.ko' | sort)
order=()
add_module() {
    local m=$1 dep
    [ -z "${loaded[$m]:-}" ] || return 0
    loaded[$m]=1
    if grep -q "/${m}.ko\$" "$moddir/modules.builtin" 2>/dev/null; then return 0; fi
    [ -n "${modpath[$m]:-}" ] || { echo "module $m: neither built in nor in the package" >&2; exit 1; }
    for dep in $(grep -aom1 'depends=[a-z0-9_,-]*' "$moddir/${modpath[$m]}" | cut -d= -f2 | tr ',' ' '); do
        add_module "${dep//-/_}"
    done
    order+=("${modpath[$m]}")
}
# virtio_net: the pod network (QEMU user networking); qemu_fw_cfg: initdata from the host.
for m in virtio_pci virtio_console vmw_vsock_virtio_transport virtio_net qemu_fw_cfg; do add_module "$m"; done
for p in "${order[@]}"; do
    install -D -m 0644 "$moddir/$p" "$root/lib/modules/$kver/$p"
done
printf '%s\n' "${order[@]}" >"$root/lib/modules/$kver/load-order"
echo "== modules (load order): $(printf '%s ' "${order[@]##*/}")"

# Local images (tests): plain root filesystem trees under /images.
agent_args=
for spec in "${local_images[@]}"; do
    name=${spec%%=*} dir=${spec#*=}
    [ -d "$dir" ] || { echo "local image $dir is not a directory" >&2; exit 1; }
    cp -a "$dir" "$root/images/$name"
    agent_args="--local-images /images"
done
for a in "${extra_agent_args[@]}"; do
    case "$a" in *[[:space:]]*) echo "agent argument with spaces: $a" >&2; exit 2 ;; esac
    agent_args="${agent_args:+$agent_args }$a"
done
[ -z "$agent_args" ] || printf '%s\n' "$agent_args" >"$root/etc/cloister/agent.args"

# /dev/console lets the kernel give /init a console before devtmpfs is mounted (needs root to
# create; without it /init reopens the console itself).
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true

# --- 5. Pack: sorted entries, fixed times, owner 0:0, normalised permissions -------------------
chmod -R u+rwX,go+rX,go-w "$root"
chmod 0755 "$root/init" "$root/bin/busybox" "$root/bin/cloister-agent"
chmod 1777 "$root/tmp"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$root" && find . -mindepth 1 -print0 | sort -z |
    cpio --quiet --null --create --format=newc --reproducible --owner=0:0) >"$work/initrd.cpio"
zstd -q -19 -T1 --no-progress -f "$work/initrd.cpio" -o "$out/initrd.img"
printf '%s' "$cmdline" >"$out/cmdline.txt"
rm -f "$out/measurements.json"

# --- 6. Reference measurements -------------------------------------------------------------------
# The SNP launch digest for measured direct boot (kernel-hashes=on) of exactly these files, with
# the launcher's defaults (policy 0x30000, EPYC-v4, SEV_FEATURES 0x1).
if [ "$firmware" != none ]; then
    if [ -f "$firmware" ]; then
        echo "== measuring (cloister measure --mode snp)"
        if [ -n "${CLOISTER:-}" ]; then measure=("$CLOISTER" measure); else
            measure=(cargo run -q --locked -p cloister -- measure); fi
        (cd "$repo" && "${measure[@]}" --mode snp --vcpus "$vcpus" \
            --vcpu-type "$vcpu_type" --ovmf "$firmware" --kernel "$out/vmlinux" --initrd "$out/initrd.img" \
            --append "$cmdline" --output json) >"$work/measurements.json" || true
        if [ -s "$work/measurements.json" ]; then
            cp "$work/measurements.json" "$out/measurements.json"
            cat "$out/measurements.json"
        else
            # Debian's OVMF.fd has no SNP_KERNEL_HASHES section: measured direct boot needs an
            # AmdSev OVMF build (OvmfPkg/AmdSev) given with --firmware.
            echo "note: no measurements.json: $firmware cannot measure a direct-boot kernel" >&2
        fi
    else
        echo "note: $firmware not found (Debian ovmf); no measurements.json" >&2
    fi
fi

(cd "$out" && sha256sum vmlinux initrd.img cmdline.txt >SHA256SUMS)
echo "== $out"
cat "$out/SHA256SUMS"
echo "kernel $kver; initrd $(stat -c %s "$out/initrd.img") bytes; cmdline: $cmdline"
