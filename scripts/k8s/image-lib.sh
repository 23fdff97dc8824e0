# shellcheck shell=bash
# Container images without Docker: assemble a root filesystem in a directory, turn it into
# a one-layer OCI image with umoci, and import that into containerd with ctr.
#
#   source scripts/k8s/image-lib.sh
#   img_rootfs_new "$dir"                          # passwd/group, nsswitch, /tmp, CA bundle
#   img_add_binary "$dir" target/debug/task-service /usr/local/bin/service
#   tarball="$(IMG_ENV="APP_HOST=0.0.0.0" img_build localhost:5000/taskmesh/task-service:dev "$dir" /usr/local/bin/service)"
#   img_import localhost:5000/taskmesh/task-service:dev "$tarball"
#
# img_build keeps the OCI tarball in $TASKMESH_CACHE/k8s-images, named after the image
# reference and a hash of the layer's content and the image config, and rebuilds only
# when that hash changes. ctr talks to $CONTAINERD_ADDRESS (its own default otherwise),
# namespace k8s.io (IMG_NAMESPACE).
#
# Needs: umoci, ctr (img_import only), GNU tar, objcopy (binutils), ldd, sha256sum.

: "${TASKMESH_CACHE:=$HOME/.cache/taskmesh}"
: "${IMG_CACHE_DIR:=$TASKMESH_CACHE/k8s-images}"
: "${IMG_NAMESPACE:=k8s.io}"

# Bump when the way images are put together changes, so cached tarballs are rebuilt.
IMG_FORMAT_VERSION=1
IMG_DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

img__die() { echo "image-lib: $*" >&2; return 1; }

# Marker of a directory made by img_rootfs_new; it never goes into the image.
IMG_ROOTFS_MARKER=.img-rootfs

# img_rootfs_new DIR: a fresh minimal root filesystem in DIR (emptied if img_rootfs_new
# made it before; any other non-empty directory is refused). Merged /usr layout (/bin,
# /sbin, /lib, /lib64 are links into /usr, as on Debian bookworm), users root, nobody and
# taskmesh (10001:10001), /etc/nsswitch.conf (files dns), /etc/hosts, /tmp (1777) and the
# host's CA bundle at /etc/ssl/certs/ca-certificates.crt.
img_rootfs_new() {
  local dir=${1:?img_rootfs_new DIR}
  [ "$dir" != / ] || img__die "refusing to use / as a rootfs" || return
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    [ -e "$dir/$IMG_ROOTFS_MARKER" ] \
      || img__die "$dir is not empty and was not made by img_rootfs_new" || return
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  touch "$dir/$IMG_ROOTFS_MARKER"
  chmod 0755 "$dir"
  mkdir -p "$dir"/{usr/bin,usr/sbin,usr/lib,usr/lib64,usr/local/bin,etc/ssl/certs,tmp,var/tmp,proc,sys,dev,run}
  ln -s usr/bin "$dir/bin"
  ln -s usr/sbin "$dir/sbin"
  ln -s usr/lib "$dir/lib"
  ln -s usr/lib64 "$dir/lib64"
  chmod 1777 "$dir/tmp" "$dir/var/tmp"
  cat >"$dir/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
taskmesh:x:10001:10001:taskmesh:/tmp:/sbin/nologin
EOF
  cat >"$dir/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
taskmesh:x:10001:
EOF
  cat >"$dir/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
  # Kubernetes mounts its own /etc/hosts and /etc/resolv.conf over these.
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir/etc/hosts"
  : >"$dir/etc/resolv.conf"
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || img__die "$ca is missing (apt-get install ca-certificates)" || return
  cp -L "$ca" "$dir/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$dir/etc/ssl/certs/ca-certificates.crt"
}

# img__copy_file DIR PATH: copies the host file PATH (symlinks followed) to DIR/PATH unless
# it is there already.
img__copy_file() {
  local dir=$1 path=$2
  [ -e "$dir$path" ] && return 0
  mkdir -p "$dir$(dirname "$path")"
  cp -L --preserve=mode "$path" "$dir$path"
}

# img_add_libs DIR FILE...: copies the shared libraries that `ldd` lists for each host
# FILE (an executable or a shared object), and the ELF loader, into DIR at the same paths.
# glibc loads libgcc_s.so.1 on demand (thread cancellation), so it comes along with libc.
# Files that are not dynamic ELF objects are skipped, and so are libraries found inside
# DIR (when FILE is in DIR and finds them through an $ORIGIN run path). A library ldd does
# not find is an error unless IMG_LIBS_OPTIONAL (space separated sonames) names it.
img_add_libs() {
  local dir=${1:?img_add_libs DIR FILE...} file out lib root
  shift
  root="$(cd "$dir" && pwd -P)" || return
  for file in "$@"; do
    out="$(LC_ALL=C ldd "$file" 2>/dev/null)" || continue
    case "$out" in *"not a dynamic executable"* | *"statically linked"*) continue ;; esac
    local missing
    missing="$(sed -n 's/^[[:space:]]*\([^ ]*\) => not found$/\1/p' <<<"$out" | sort -u)"
    for lib in ${IMG_LIBS_OPTIONAL:-}; do missing="$(grep -vxF "$lib" <<<"$missing" || true)"; done
    [ -z "$missing" ] || img__die "$file: libraries not found: $(tr "\n" " " <<<"$missing")" || return
    # Lines look like "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or
    # "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
    while read -r lib; do
      # Found inside DIR already (an $ORIGIN run path of a file in DIR).
      case "$lib" in "$root"/* | "$dir"/*) continue ;; esac
      img__copy_file "$dir" "$lib" || return
      case "$lib" in
        */libc.so.6)
          local gcc_s
          gcc_s="$(dirname "$lib")/libgcc_s.so.1"
          [ ! -e "$gcc_s" ] || img__copy_file "$dir" "$gcc_s" || return
          ;;
      esac
    done < <(sed -n -e 's/^.*=> \(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' \
      -e 's/^[[:space:]]*\(\/[^ ]*\) (0x[0-9a-f]*)$/\1/p' <<<"$out")
  done
}

# img_add_binary DIR SRC [DEST]: copies the executable SRC to DIR/DEST (default: the same
# path as SRC) with its debug information stripped (IMG_STRIP=0 keeps it; debug builds of
# the services are mostly debug info), plus every library `ldd` lists and the ELF loader at
# their host paths. Static binaries and scripts are just copied.
img_add_binary() {
  local dir=${1:?img_add_binary DIR SRC [DEST]} src=${2:?img_add_binary DIR SRC [DEST]}
  local dest=${3:-$2}
  [ -f "$src" ] || img__die "$src: no such file" || return
  case "$dest" in /*) ;; *) img__die "$dest: DEST must be an absolute path" || return ;; esac
  mkdir -p "$dir$(dirname "$dest")"
  rm -f "$dir$dest"
  if [ "${IMG_STRIP:-1}" = 1 ] && head -c4 "$src" | grep -q $'^\x7fELF'; then
    objcopy --strip-debug "$src" "$dir$dest" || return
  else
    cp -L "$src" "$dir$dest"
  fi
  chmod 0755 "$dir$dest"
  img_add_libs "$dir" "$src"
}

# img_add_busybox DIR: busybox-static as /usr/bin/busybox and a link for each of its
# applets (sh, cat, ...) that DIR does not have already.
img_add_busybox() {
  local dir=${1:?img_add_busybox DIR} bb=${IMG_BUSYBOX:-/bin/busybox} applet
  [ -x "$bb" ] || img__die "$bb is missing (apt-get install busybox-static)" || return
  if LC_ALL=C ldd "$bb" >/dev/null 2>&1; then
    img__die "$bb is dynamically linked; install busybox-static" || return
  fi
  cp -L "$bb" "$dir/usr/bin/busybox"
  chmod 0755 "$dir/usr/bin/busybox"
  for applet in $("$bb" --list); do
    [ -e "$dir/usr/bin/$applet" ] || [ -L "$dir/usr/bin/$applet" ] || ln -s busybox "$dir/usr/bin/$applet"
  done
}

# img__layer DIR: the rootfs as an uncompressed tar on stdout, byte-for-byte the same for
# the same content (sorted names, mtime 0, numeric owners, GNU format without atimes).
img__layer() {
  local dir=$1 entries
  mapfile -t entries < <(cd "$dir" && find . -mindepth 1 -maxdepth 1 ! -name "$IMG_ROOTFS_MARKER" -printf '%P\n' | LC_ALL=C sort)
  [ "${#entries[@]}" -gt 0 ] || img__die "$dir is empty" || return
  tar --sort=name --mtime=@0 --numeric-owner --format=gnu --no-acls --no-xattrs \
    -C "$dir" -cf - -- "${entries[@]}"
}

# img_build REF DIR ENTRYPOINT...: makes (or reuses) the OCI image tarball for REF from the
# rootfs DIR and prints its path. Env: IMG_USER (default 10001:10001), IMG_ENV (space
# separated K=V; PATH defaults to the usual one), IMG_WORKDIR, IMG_CMD (space separated).
img_build() {
  local ref=${1:?img_build REF DIR ENTRYPOINT...} dir=${2:?img_build REF DIR ENTRYPOINT...}
  shift 2
  [ $# -gt 0 ] || img__die "img_build $ref: no entrypoint" || return
  [ -d "$dir" ] || img__die "$dir: no such directory" || return
  command -v umoci >/dev/null || img__die "umoci is missing (apt-get install umoci)" || return
  local user=${IMG_USER:-10001:10001} workdir=${IMG_WORKDIR:-} env=${IMG_ENV:-} cmd=${IMG_CMD:-}
  case " $env " in *" PATH="*) ;; *) env="PATH=$IMG_DEFAULT_PATH${env:+ $env}" ;; esac

  # The tag is whatever follows a ':' in the last path component (latest if none); ctr
  # names the image <name>:<tag> on import (img_import).
  local name=$ref tag=latest
  case "${ref##*/}" in *:*) name=${ref%:*} tag=${ref##*:} ;; esac

  local config layer_sum hash sanitized out
  config="format=$IMG_FORMAT_VERSION"$'\n'"ref=$ref"$'\n'"user=$user"$'\n'"workdir=$workdir"$'\n'"env=$env"$'\n'"cmd=$cmd"$'\n'"entrypoint=$(printf '%s\0' "$@" | tr '\0' ' ')"
  layer_sum="$(set -o pipefail; img__layer "$dir" | sha256sum | cut -d' ' -f1)" || return
  hash="$(printf '%s\n%s\n' "$layer_sum" "$config" | sha256sum | cut -c1-16)"
  sanitized="$(tr -c 'A-Za-z0-9._-' '_' <<<"$ref" | sed 's/_$//')"
  mkdir -p "$IMG_CACHE_DIR"
  out="$IMG_CACHE_DIR/$sanitized-$hash.tar"
  if [ -s "$out" ]; then
    echo "$out"
    return 0
  fi

  local work
  work="$(mktemp -d "$IMG_CACHE_DIR/.build-$sanitized.XXXXXX")" || return
  (
    set -eo pipefail
    img__layer "$dir" >"$work/layer.tar"
    [ "$(sha256sum "$work/layer.tar" | cut -d' ' -f1)" = "$layer_sum" ] \
      || img__die "$dir changed while building $ref"
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:$tag"
    umoci raw add-layer --image "$work/oci:$tag" --history.created 1970-01-01T00:00:00Z \
      --history.created_by "scripts/k8s/image-lib.sh img_build" "$work/layer.tar"
    rm -f "$work/layer.tar"
    args=(--no-history --image "$work/oci:$tag" --created 1970-01-01T00:00:00Z
      --author taskmesh --os linux --architecture amd64 --config.user "$user")
    for e in "$@"; do args+=(--config.entrypoint "$e"); done
    for e in $env; do args+=(--config.env "$e"); done
    for e in $cmd; do args+=(--config.cmd "$e"); done
    [ -z "$workdir" ] || args+=(--config.workingdir "$workdir")
    args+=(--config.label "org.opencontainers.image.title=$name")
    umoci config "${args[@]}"
    umoci gc --layout "$work/oci"
    tar --sort=name --mtime=@0 --numeric-owner -C "$work/oci" -cf "$work/image.tar" .
    mv "$work/image.tar" "$out"
  ) || { rm -rf "$work"; img__die "building $ref failed"; return; }
  rm -rf "$work"
  # Older builds of the same reference.
  local old
  for old in "$IMG_CACHE_DIR/$sanitized"-*.tar; do
    [ "$old" = "$out" ] || [[ ! "$(basename "$old")" =~ ^"$sanitized"-[0-9a-f]{16}\.tar$ ]] || rm -f "$old"
  done
  echo "$out"
}

# img_manifest_digest TARBALL: the digest of the image manifest in an img_build tarball.
img_manifest_digest() {
  local tarball=${1:?img_manifest_digest TARBALL}
  tar -xOf "$tarball" ./index.json | grep -o '"digest":"sha256:[0-9a-f]*"' \
    | sed -n '1s/^"digest":"\(.*\)"$/\1/p'
}

# img_import REF TARBALL: imports an img_build tarball into containerd (namespace
# $IMG_NAMESPACE, socket $CONTAINERD_ADDRESS) as REF; nothing to do when REF already names
# the same manifest.
img_import() {
  local ref=${1:?img_import REF TARBALL} tarball=${2:?img_import REF TARBALL}
  [ -s "$tarball" ] || img__die "$tarball: no such file" || return
  command -v ctr >/dev/null || img__die "ctr is missing (apt-get install containerd)" || return
  # A reference without a tag is imported as :latest, as img_build tags it.
  case "${ref##*/}" in *:*) ;; *) ref="$ref:latest" ;; esac
  local want have name=${ref%:*}
  want="$(img_manifest_digest "$tarball")" || return
  have="$(ctr -n "$IMG_NAMESPACE" images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')"
  [ "$have" != "$want" ] || return 0
  ctr -n "$IMG_NAMESPACE" images import --base-name "$name" --digests "$tarball" >/dev/null \
    || img__die "ctr images import $tarball failed" || return
  have="$(ctr -n "$IMG_NAMESPACE" images ls "name==$ref" | awk 'NR > 1 { print $3 }')"
  [ "$have" = "$want" ] || img__die "after importing $tarball, $ref is '${have:-absent}', expected $want"
}
