#!/usr/bin/env bash
# Builds deploy/Dockerfile without a container engine daemon, with buildah
# (chroot isolation, vfs storage: no daemon, no overlay mounts, no user
# namespaces needed), then checks the image the way `docker run` would use
# it. For machines where `docker build` is not available; not run in CI (it
# compiles toolmesh from scratch: about 25 minutes on a busy 2-core machine
# with JOBS=1, see deploy/README.md).
#
# Usage (as root, from anywhere):   deploy/build-image.sh [TAG]
#   TAG defaults to toolmesh:dev.
#
# Steps:
#   1. apt-get installs buildah (and debootstrap when needed) if missing.
#   2. The base image: BASE_IMAGE if set; else docker.io/library/debian:bookworm
#      if the registry answers; else one made here with debootstrap
#      (--variant=minbase, like the official image) from the Debian mirror,
#      tagged localhost/debian:bookworm-debootstrap and reused next time.
#   3. buildah bud of deploy/Dockerfile with DEBIAN_IMAGE set to that base.
#   4. Checks on the result: USER is 10001:10001 and commands run as uid
#      10001; `toolmesh --help`, `toolmesh-orchestrator --help` and
#      `toolmesh-worker --help` exit 0; the orchestrator starts with
#      --store memory and answers GET /healthz; no compiler and no -dev
#      package in the image; the image size is printed.
#   5. With IMAGE_ARCHIVE=FILE, writes the image as a docker-archive that
#      `docker load -i FILE` or `kind load image-archive FILE` takes.
#
# Environment:
#   JOBS           parallel compile jobs in the build stage (default 1)
#   BASE_IMAGE     use this base instead of step 2's choices
#   STORAGE_ROOT   buildah's storage (default /var/tmp/toolmesh-buildah);
#                  `rm -rf` it to free the disk (a few GB: vfs copies every
#                  layer in full)
#   IMAGE_ARCHIVE  see step 5
# Exit status: 0 when the image was built and every check passed.
set -euo pipefail

tag=${1:-toolmesh:dev}
jobs=${JOBS:-1}
storage_root=${STORAGE_ROOT:-/var/tmp/toolmesh-buildah}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
debootstrap_tag=localhost/debian:bookworm-debootstrap

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }
bh() {
  buildah --root "$storage_root/root" --runroot "$storage_root/run" \
    --storage-driver vfs "$@"
}
start=$SECONDS
elapsed() { echo "$((SECONDS - start))s"; }

[ "$(id -u)" -eq 0 ] || die "run as root (buildah's chroot isolation needs it)"

# --- 1. tools
need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
if [ -z "${BASE_IMAGE:-}" ] && ! command -v debootstrap >/dev/null 2>&1; then
  need+=(debootstrap)
fi
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p "$storage_root"

# --- 2. the base image
make_debootstrap_base() {
  local tmp ctr
  tmp=$(mktemp -d /var/tmp/toolmesh-rootfs.XXXXXX)
  log "debootstrap bookworm (minbase) from the Debian mirror"
  if ! debootstrap --variant=minbase bookworm "$tmp/rootfs" \
      http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1; then
    tail -20 "$tmp/debootstrap.log" >&2
    rm -rf "$tmp"
    die "debootstrap failed"
  fi
  # The official image's sources: the release, its updates and security.
  rm -f "$tmp/rootfs/etc/apt/sources.list"
  cat >"$tmp/rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # What the official image leaves out: package lists and downloaded .debs.
  rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/"*.bin \
    "$tmp/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$tmp/rootfs" --numeric-owner -cf "$tmp/rootfs.tar" .
  ctr=$(bh from scratch)
  bh add "$ctr" "$tmp/rootfs.tar" / >/dev/null
  bh config --cmd /bin/bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$ctr"
  bh commit --rm "$ctr" "$debootstrap_tag" >/dev/null
  rm -rf "$tmp"
}

if [ -n "${BASE_IMAGE:-}" ]; then
  base=$BASE_IMAGE
elif timeout 60 bh pull -q docker.io/library/debian:bookworm >/dev/null 2>&1; then
  base=docker.io/library/debian:bookworm
else
  base=$debootstrap_tag
  if bh inspect --type image "$base" >/dev/null 2>&1; then
    log "debian:bookworm is not reachable; reusing $base"
  else
    log "debian:bookworm is not reachable; making $base"
    make_debootstrap_base
  fi
fi
log "base image $base ready after $(elapsed)"

# --- 3. the build
build_start=$SECONDS
bh bud --isolation chroot --pull-never --layers=false \
  --build-arg "DEBIAN_IMAGE=$base" --build-arg "JOBS=$jobs" \
  -f "$repo/deploy/Dockerfile" -t "$tag" "$repo"
log "built $tag in $((SECONDS - build_start))s"

# --- 4. checks
ctr=$(bh from --pull-never "$tag")
cleanup() {
  if [ -n "${orch_pid:-}" ]; then kill "$orch_pid" 2>/dev/null || true; fi
  bh umount "$ctr" >/dev/null 2>&1 || true
  bh rm "$ctr" >/dev/null 2>&1 || true
  if [ -n "${check_dir:-}" ]; then rm -rf "$check_dir"; fi
}
trap cleanup EXIT
run() { bh run --isolation chroot "$ctr" -- "$@"; }

user=$(bh inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")
[ "$user" = "10001:10001" ] || die "image USER is '$user', not 10001:10001"
uid=$(run id -u)
[ "$uid" = "10001" ] || die "commands run as uid $uid, not 10001"
log "runs as uid $uid ($(run id -un))"

for binary in toolmesh toolmesh-orchestrator toolmesh-worker; do
  run "$binary" --help >/dev/null || die "$binary --help failed"
done
log "toolmesh, toolmesh-orchestrator, toolmesh-worker answer --help"

# The orchestrator, as the Kubernetes manifests start it, with an in-memory
# store; chroot isolation shares the host's network, so port 0 on loopback.
check_dir=$(mktemp -d)
bh run --isolation chroot --env ANTHROPIC_API_KEY=image-check "$ctr" -- \
  toolmesh-orchestrator --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --store memory --data-dir /tmp/toolmesh-data --insecure-no-auth \
  >"$check_dir/out" 2>"$check_dir/err" &
orch_pid=$!
http=
for _ in $(seq 1 100); do
  http=$(sed -n 's/^http listening on //p' "$check_dir/out")
  [ -n "$http" ] && break
  kill -0 "$orch_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$http" ] || { cat "$check_dir/err" >&2; die "the orchestrator did not start"; }
healthz=$(run python3 -c "import urllib.request as u; \
r = u.urlopen('http://$http/healthz', timeout=5); print(r.status, r.read().decode().strip())")
log "orchestrator in the image: http on $http, GET /healthz -> $healthz"
case "$healthz" in 200*) ;; *) die "/healthz did not answer 200" ;; esac
kill -TERM "$orch_pid"
wait "$orch_pid" || true
orch_pid=

mnt=$(bh mount "$ctr")
for compiler in gcc g++ cc c++ cpp clang clang++ cmake ninja ld as; do
  for dir in usr/bin usr/local/bin bin; do
    [ ! -e "$mnt/$dir/$compiler" ] || die "found /$dir/$compiler in the image"
  done
done
dev=$(run dpkg-query -W -f '${Package}\n' | grep -E -- '-dev(:|$)' || true)
[ -z "$dev" ] || die "-dev packages in the image: $dev"
log "no compiler, no -dev package"
size=$(bh images --format '{{.Size}}' "$tag" | head -1)
log "image $tag: $size ($(du -sh "$mnt" | cut -f1) unpacked)"
bh umount "$ctr" >/dev/null

# --- 5. an archive for docker load / kind
if [ -n "${IMAGE_ARCHIVE:-}" ]; then
  rm -f "$IMAGE_ARCHIVE"
  bh push "$tag" "docker-archive:$IMAGE_ARCHIVE:$tag" >/dev/null
  log "wrote $IMAGE_ARCHIVE ($(du -h "$IMAGE_ARCHIVE" | cut -f1))"
fi
log "done in $(elapsed)"
