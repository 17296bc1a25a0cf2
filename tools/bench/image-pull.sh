#!/usr/bin/env bash
# Image pull benchmark (issue: guest image pull). One run, same machine, same layers:
#   floor  = `gzip -d` alone over every layer, one after the other (decompression is the floor)
#   ours   = `cloister image pull` from a loopback docker-registry: download, digest, decrypt,
#            gunzip, diff_id, untar to disk (plain and JWE-encrypted image)
#   peer   = `skopeo copy --decryption-key` to an OCI layout + `umoci unpack` (what a host-side
#            pipeline with Debian's tools does for the same encrypted image)
# Prints throughput (uncompressed MiB/s), the ratios, and peak RSS (from /usr/bin/time).
#
# Needs: skopeo docker-registry umoci openssl gzip tar python3, a release build of `cloister`
# (CLOISTER=path, default $CARGO_TARGET_DIR/release/cloister). Layers come from this machine's
# /usr (real binaries and libraries: realistic compressibility); SOURCES overrides the list.
set -euo pipefail

target=${CARGO_TARGET_DIR:-/var/tmp/cloister-target}
cloister=${CLOISTER:-$target/release/cloister}
work=${WORK:-/var/tmp/cloister-image-bench}
sources=${SOURCES:-"usr/bin usr/lib/gcc usr/lib/python3.11 usr/libexec"}
[ -x "$cloister" ] || { echo "build first: cargo build --release -p cloister" >&2; exit 1; }

rm -rf "$work"; mkdir -p "$work/plain/blobs/sha256"; cd "$work"
i=0; layers=()
for s in $sources; do
  tar --numeric-owner --sort=name -C / -cf "l$i.tar" "$s"
  gzip -n -6 -k "l$i.tar"
  layers+=("l$i"); i=$((i+1))
done
python3 - "${layers[@]}" <<'EOF'
import hashlib, json, os, shutil, sys
def put(b):
    h = hashlib.sha256(b).hexdigest(); open(f"plain/blobs/sha256/{h}", "wb").write(b); return h
descs, diffs = [], []
for l in sys.argv[1:]:
    tar = hashlib.sha256(open(f"{l}.tar", "rb").read()).hexdigest(); diffs.append("sha256:" + tar)
    gz = open(f"{l}.tar.gz", "rb").read(); h = put(gz)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + h, "size": len(gz)})
cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
ch = put(cfg)
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + ch, "size": len(cfg)},
                "layers": descs}).encode()
mh = put(m)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mh,
           "size": len(m), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, open("plain/index.json", "w"))
open("plain/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF
tar_bytes=$(cat l*.tar | wc -c); gz_bytes=$(cat l*.tar.gz | wc -c)
rm -f l*.tar
mib() { python3 -c "print(f'{$1/1048576:.1f}')"; }
echo "image: ${#layers[@]} layers, $(mib "$tar_bytes") MiB uncompressed, $(mib "$gz_bytes") MiB gzip"

openssl genrsa -out rsa.pem 2048 2>/dev/null; openssl rsa -in rsa.pem -pubout -out rsa.pub 2>/dev/null
skopeo --insecure-policy copy -q --encryption-key jwe:rsa.pub oci:plain:v1 oci:enc:v1

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host=127.0.0.1:$port
printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s/reg}}\nhttp: {addr: %s}\n' "$work" "$host" > reg.yml
docker-registry serve reg.yml >/dev/null 2>&1 & reg_pid=$!
trap 'kill $reg_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://$host/v2/" >/dev/null && break; sleep 0.1; done
skopeo --insecure-policy copy -q --dest-tls-verify=false oci:plain:v1 "docker://$host/bench/plain:v1"
skopeo --insecure-policy copy -q --dest-tls-verify=false oci:enc:v1 "docker://$host/bench/enc:v1"
rm -rf plain enc

secs() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
# /usr/bin/time -f '%e %M' → wall seconds, peak RSS KiB (last line of its stderr).
timed() { /usr/bin/time -f '%e %M' "$@" 2> time.err >/dev/null || { cat time.err >&2; exit 1; }; tail -1 time.err; }

sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
read -r floor_s floor_rss < <(timed sh -c 'for f in l*.tar.gz; do gzip -d -c "$f"; done > /dev/null')
rate() { python3 -c "import sys; print(f'{$tar_bytes/float(sys.argv[1])/1048576:.1f}')" "$1"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }
echo "floor  gzip -d (sequential)              $(secs "$floor_s") s  $(rate "$floor_s") MiB/s"

run_ours() {
  rm -rf rootfs
  timed "$cloister" image pull --insecure-registry "$host" "$@" --rootfs rootfs
}
read -r p_s p_rss < <(run_ours "docker://$host/bench/plain:v1")
read -r p1_s p1_rss < <(run_ours --concurrency 1 "docker://$host/bench/plain:v1")
read -r e_s e_rss < <(run_ours --decryption-key rsa.pem "docker://$host/bench/enc:v1")
echo "ours   plain                             $(secs "$p_s") s  $(rate "$p_s") MiB/s  ($(ratio "$floor_s" "$p_s")x the floor's throughput)  peak RSS $((p_rss/1024)) MiB"
echo "ours   plain, one layer at a time        $(secs "$p1_s") s  $(rate "$p1_s") MiB/s  ($(ratio "$floor_s" "$p1_s")x)  peak RSS $((p1_rss/1024)) MiB"
echo "ours   encrypted (JWE RSA)               $(secs "$e_s") s  $(rate "$e_s") MiB/s  ($(ratio "$floor_s" "$e_s")x)  peak RSS $((e_rss/1024)) MiB"

rm -rf peer peer-bundle
read -r k_s k_rss < <(timed skopeo --insecure-policy copy -q --src-tls-verify=false --decryption-key rsa.pem "docker://$host/bench/enc:v1" oci:peer:v1)
read -r u_s u_rss < <(timed umoci unpack --image peer:v1 peer-bundle)
peer_s=$(python3 -c "print(float('$k_s')+float('$u_s'))")
echo "peer   skopeo copy --decryption-key      $(secs "$k_s") s  peak RSS $((k_rss/1024)) MiB"
echo "peer   umoci unpack                      $(secs "$u_s") s  peak RSS $((u_rss/1024)) MiB"
echo "peer   total                             $(secs "$peer_s") s  $(rate "$peer_s") MiB/s  (ours encrypted is $(ratio "$peer_s" "$e_s")x faster)"
rm -rf rootfs peer peer-bundle
