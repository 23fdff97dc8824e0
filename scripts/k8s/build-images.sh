#!/usr/bin/env bash
# Builds the container images of a local Kubernetes cluster without Docker or a registry
# (scripts/k8s/image-lib.sh: a root filesystem in a directory, umoci, ctr), one line per
# image with the seconds it took and its size:
#   localhost:5000/taskmesh/<app>:dev         the four services, from the cargo build in
#                                             ${CARGO_TARGET_DIR:-target}/${TASKMESH_IMAGE_PROFILE:-debug}
#   localhost:5000/taskmesh-deps/<name>:dev   redis, kafka, postgres, smtp-sink for
#                                             helm/taskmesh-deps (local clusters only)
#
#   scripts/k8s/build-images.sh [--import] [NAME...]
#
# NAME is an app or dependency name (default: all eight). --import also imports them into
# containerd (namespace k8s.io, socket $CONTAINERD_ADDRESS). Tarballs are cached in
# $TASKMESH_CACHE/k8s-images (default ~/.cache/taskmesh) and rebuilt only when their
# content changes. Binaries of the services must be built first (cargo build --workspace
# --bins); Redis, PostgreSQL, Kafka's jars, aiosmtpd and busybox-static come from the
# setup scripts and Debian packages. KEEP_ROOTFS=1 keeps the root filesystems in
# $TASKMESH_CACHE/k8s-images/rootfs/<name> (to look into or chroot into).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=scripts/k8s/image-lib.sh
source "$here/image-lib.sh"

SERVICES=(task-service notification-service recurring-service analytics-service)
DEPS=(redis kafka postgres smtp-sink)
SERVICE_REGISTRY=localhost:5000/taskmesh
DEPS_REGISTRY=localhost:5000/taskmesh-deps
TAG=dev
# The Java modules Kafka 4.4 and its dependencies use (jdeps and the jars' module-info),
# plus jdk.crypto.ec for TLS with EC keys, jdk.management for Kafka's OS metrics,
# jdk.unsupported for sun.misc.Unsafe and jdk.naming.dns/jdk.zipfs/jdk.security.auth for
# the corners (JAAS modules, DNS lookups through JNDI).
JAVA_MODULES=java.base,java.compiler,java.desktop,java.logging,java.management,java.naming,java.rmi,java.scripting,java.security.jgss,java.security.sasl,java.sql,java.xml,jdk.crypto.ec,jdk.management,jdk.naming.dns,jdk.security.auth,jdk.unsupported,jdk.zipfs
PG_MAJOR=15

usage() { sed -n '2,/^set -e/p' "$0" | sed -e '/^set -e/d' -e 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
die() { echo "build-images: $*" >&2; exit 1; }

import=0
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import=1 ;;
    -h | --help) usage 0 ;;
    -*) usage ;;
    *) names+=("$1") ;;
  esac
  shift
done
[ ${#names[@]} -gt 0 ] || names=("${SERVICES[@]}" "${DEPS[@]}")
for n in "${names[@]}"; do
  case " ${SERVICES[*]} ${DEPS[*]} " in *" $n "*) ;; *) die "unknown image '$n' (known: ${SERVICES[*]} ${DEPS[*]})" ;; esac
done

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
profile="${TASKMESH_IMAGE_PROFILE:-debug}"
missing=()
for n in "${names[@]}"; do
  case " ${SERVICES[*]} " in *" $n "*) [ -x "$target_dir/$profile/$n" ] || missing+=("$target_dir/$profile/$n") ;; esac
done
[ ${#missing[@]} -eq 0 ] || die "missing service binaries: ${missing[*]}
  build them first: cargo build --workspace --bins$([ "$profile" = debug ] || echo " --profile $profile")
  (or set CARGO_TARGET_DIR / TASKMESH_IMAGE_PROFILE to where they are)"

for tool in umoci tar objcopy ldd sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install umoci binutils)"
done
[ "$import" = 0 ] || command -v ctr >/dev/null || die "ctr is missing (apt-get install containerd)"
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then
  for n in "${names[@]}"; do
    case " ${DEPS[*]} " in *" $n "*) die "the dependency images need busybox-static (apt-get install busybox-static)" ;; esac
  done
fi

rootfs_base="$IMG_CACHE_DIR/rootfs"
mkdir -p "$rootfs_base"

# Each rootfs_<name> function fills $1 and sets ENTRYPOINT (array) and the IMG_* settings.

rootfs_service() { # DIR APP
  img_add_binary "$1" "$target_dir/$profile/$2" /usr/local/bin/service
  ENTRYPOINT=(/usr/local/bin/service)
  IMG_ENV="APP_HOST=0.0.0.0"
}

rootfs_redis() {
  local dir=$1 redis out
  redis="$("$repo/scripts/setup-redis.sh")"
  # Debian's build has TLS: it gets as far as asking for a certificate, where a build
  # without TLS stops at "Bad directive" (both exit at once).
  out="$(timeout 10 "$redis" --port 0 --tls-port 1 --save '' 2>&1 || true)"
  grep -q 'No tls-cert-file configured' <<<"$out" \
    || die "$redis was built without TLS (redis-server --tls-port is not accepted)"
  img_add_binary "$dir" "$redis" /usr/bin/redis-server
  img_add_busybox "$dir"
  install -m 0755 "$here/images/redis-entrypoint.sh" "$dir/usr/local/bin/redis-entrypoint"
  install -d -o 10001 -g 10001 -m 0755 "$dir/data"
  ENTRYPOINT=(/usr/local/bin/redis-entrypoint)
  IMG_WORKDIR=/data
}

# A Java runtime with only the modules Kafka needs, made once per JDK and module list.
kafka_jre() {
  local java jhome version jre
  java="$(command -v java)" || die "Java 17+ is needed for the Kafka image (apt-get install openjdk-17-jdk-headless)"
  jhome="$(dirname "$(dirname "$(readlink -f "$java")")")"
  version="$(sed -n 's/^JAVA_VERSION="\(.*\)"/\1/p' "$jhome/release" 2>/dev/null || true)"
  jre="$IMG_CACHE_DIR/jre/${version:-unknown}-$(echo "$jhome $JAVA_MODULES" | sha256sum | cut -c1-12)"
  if [ ! -x "$jre/bin/java" ]; then
    if [ -x "$jhome/bin/jlink" ] && [ -d "$jhome/jmods" ]; then
      echo "build-images: making a Java runtime with jlink in $jre" >&2
      rm -rf "$jre.tmp" && mkdir -p "$(dirname "$jre")"
      "$jhome/bin/jlink" --add-modules "$JAVA_MODULES" --strip-debug --no-man-pages \
        --no-header-files --compress=2 --output "$jre.tmp" >&2
      rm -rf "$jre" && mv "$jre.tmp" "$jre"
    else
      # No jlink or jmods (a JRE only): the whole runtime, symlinks resolved.
      echo "build-images: no jlink in $jhome; copying the whole runtime" >&2
      rm -rf "$jre.tmp" && mkdir -p "$(dirname "$jre")"
      cp -rL "$jhome" "$jre.tmp" && rm -rf "$jre" && mv "$jre.tmp" "$jre"
    fi
  fi
  echo "$jre"
}

rootfs_kafka() {
  local dir=$1 jre libs
  jre="$(kafka_jre)"
  libs="$("$repo/scripts/setup-kafka.sh")"
  mkdir -p "$dir/opt/kafka/libs" "$dir/opt/kafka/config"
  cp -a "$jre" "$dir/opt/java"
  # Headless: no X11, splash screen or sound libraries (and so none of their dependencies).
  rm -f "$dir"/opt/java/lib/{libawt_xawt,libjawt,libsplashscreen,libjsound}.so
  # The runtime's own libraries resolve inside it ($ORIGIN) or are loaded already (libjvm);
  # the system ones come along. snappy-java and zstd-jni unpack native code that needs
  # libstdc++ at run time.
  local so
  mapfile -t so < <(find "$dir/opt/java/lib" -name '*.so')
  IMG_LIBS_OPTIONAL=libjvm.so img_add_libs "$dir" "$dir/opt/java/bin/java" "${so[@]}"
  img__copy_file "$dir" /usr/lib/x86_64-linux-gnu/libstdc++.so.6
  img_add_libs "$dir" /usr/lib/x86_64-linux-gnu/libstdc++.so.6
  cp "$libs"/*.jar "$dir/opt/kafka/libs/"
  cp "$repo/scripts/kafka/log4j2.properties" "$dir/opt/kafka/config/"
  img_add_busybox "$dir"
  install -m 0755 "$here/images/kafka-entrypoint.sh" "$dir/usr/local/bin/kafka-entrypoint"
  install -d -o 10001 -g 10001 -m 0755 "$dir/var/lib/kafka"
  ENTRYPOINT=(/usr/local/bin/kafka-entrypoint)
  IMG_ENV="PATH=/opt/java/bin:$IMG_DEFAULT_PATH JAVA_HOME=/opt/java KAFKA_HOME=/opt/kafka"
}

rootfs_postgres() {
  local dir=$1 pg=/usr/lib/postgresql/$PG_MAJOR b f
  "$repo/scripts/setup-postgres.sh" >&2
  [ -x "$pg/bin/postgres" ] || die "$pg/bin/postgres is missing (PostgreSQL $PG_MAJOR from Debian)"
  for b in postgres initdb pg_ctl pg_isready psql; do
    img_add_binary "$dir" "$pg/bin/$b"
  done
  # Extensions and the text search/encoding modules, without the LLVM JIT (jit=off).
  mkdir -p "$dir$pg/lib"
  for f in "$pg"/lib/*.so; do
    case "$f" in */llvmjit*) continue ;; esac
    cp -L "$f" "$dir$f"
  done
  img_add_libs "$dir" "$dir$pg"/lib/*.so
  mkdir -p "$dir/usr/share/postgresql"
  cp -rL "/usr/share/postgresql/$PG_MAJOR" "$dir/usr/share/postgresql/"
  rm -rf "$dir/usr/share/postgresql/$PG_MAJOR/man"
  # Debian builds PostgreSQL against the system time zone data.
  mkdir -p "$dir/usr/share/zoneinfo"
  (cd /usr/share/zoneinfo && tar --exclude=./right --exclude=./posix -cf - .) | tar -C "$dir/usr/share/zoneinfo" -xf -
  img_add_busybox "$dir" # initdb runs the bootstrap backend through /bin/sh
  install -m 0755 "$here/images/postgres-entrypoint.sh" "$dir/usr/local/bin/postgres-entrypoint"
  install -d -o 10001 -g 10001 -m 0755 "$dir/var/lib/postgresql" "$dir/var/lib/postgresql/data"
  ENTRYPOINT=(/usr/local/bin/postgres-entrypoint)
  IMG_ENV="PATH=$pg/bin:$IMG_DEFAULT_PATH PGDATA=/var/lib/postgresql/data/pgdata"
}

rootfs_smtp_sink() {
  local dir=$1 venv_python site py=/usr/bin/python3.11 stdlib=/usr/lib/python3.11
  venv_python="$("$repo/scripts/setup-smtp.sh")"
  site="$("$venv_python" -c 'import aiosmtpd, os; print(os.path.dirname(os.path.dirname(aiosmtpd.__file__)))')"
  [ -x "$py" ] || die "$py is missing (apt-get install python3.11); aiosmtpd is pure Python and runs on Debian's 3.11"
  img_add_binary "$dir" "$py"
  ln -s python3.11 "$dir/usr/bin/python3"
  mkdir -p "$dir$stdlib"
  (cd "$stdlib" && tar --exclude=./test --exclude=./lib2to3 --exclude=./ensurepip \
    --exclude=./pydoc_data --exclude=./idlelib --exclude=./tkinter --exclude=./turtledemo \
    --exclude='./config-3.11-*' --exclude=./site-packages --exclude=./dist-packages -cf - .) \
    | tar -C "$dir$stdlib" -xf -
  img_add_libs "$dir" "$stdlib"/lib-dynload/*.so
  # aiosmtpd and its dependencies only (not pip or setuptools).
  mkdir -p "$dir/opt/smtp-sink/site-packages"
  (cd "$site" && cp -r aiosmtpd aiosmtpd-*.dist-info public atpublic-*.dist-info attr attrs attrs-*.dist-info \
    "$dir/opt/smtp-sink/site-packages/")
  install -m 0644 "$here/images/smtp_sink.py" "$dir/opt/smtp-sink/smtp_sink.py"
  install -d -o 10001 -g 10001 -m 0755 "$dir/var/mail"
  ENTRYPOINT=(/usr/bin/python3.11 -m aiosmtpd)
  IMG_CMD="-n -l 0.0.0.0:1025 -c smtp_sink.LoggingMailbox /var/mail/maildir"
  IMG_ENV="PYTHONPATH=/opt/smtp-sink:/opt/smtp-sink/site-packages PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
[ "$import" = 0 ] || echo "build-images: importing into containerd at ${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}, namespace $IMG_NAMESPACE" >&2
total_start="$(now)"
for n in "${names[@]}"; do
  start="$(now)"
  dir="$rootfs_base/$n"
  ENTRYPOINT=() IMG_ENV="" IMG_CMD="" IMG_WORKDIR="" IMG_USER=10001:10001
  img_rootfs_new "$dir"
  case "$n" in
    redis | kafka | postgres) ref="$DEPS_REGISTRY/$n:$TAG" && "rootfs_$n" "$dir" ;;
    smtp-sink) ref="$DEPS_REGISTRY/$n:$TAG" && rootfs_smtp_sink "$dir" ;;
    *) ref="$SERVICE_REGISTRY/$n:$TAG" && rootfs_service "$dir" "$n" ;;
  esac
  tarball="$(IMG_ENV="$IMG_ENV" IMG_CMD="$IMG_CMD" IMG_WORKDIR="$IMG_WORKDIR" IMG_USER="$IMG_USER" \
    img_build "$ref" "$dir" "${ENTRYPOINT[@]}")"
  [ "$import" = 0 ] || img_import "$ref" "$tarball"
  [ "${KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$dir"
  printf '%-52s %6.1fs  %4s MB  %s\n' "$ref" "$(elapsed "$start")" \
    "$(( $(stat -c %s "$tarball") / 1000000 ))" "$tarball"
done
printf 'build-images: %d image(s) in %.1fs\n' "${#names[@]}" "$(elapsed "$total_start")" >&2
