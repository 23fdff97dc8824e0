#!/usr/bin/env bash
# Provides Apache Kafka (KRaft) as a directory of jars resolved from Maven Central, cached
# by version. Prints the libs directory; run it with
#   java -cp "$LIBS/*" kafka.tools.StorageTool format ... ; java -cp "$LIBS/*" kafka.Kafka ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")}"
CACHE="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}"
libs="$CACHE/kafka-$KAFKA_VERSION/libs"
# The fault tests' SASL_SSL broker gets a certificate from a CA made with openssl.
if ! command -v openssl >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-kafka: installing openssl from the Debian packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssl >&2
fi
if [ -f "$libs/.complete" ]; then echo "$libs"; exit 0; fi

command -v java >/dev/null || { echo "setup-kafka: Java 17+ is required" >&2; exit 1; }
command -v mvn >/dev/null || { echo "setup-kafka: Maven is required (apt-get install maven)" >&2; exit 1; }
echo "setup-kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven Central" >&2
rm -rf "$libs.tmp" && mkdir -p "$libs.tmp"
mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs.tmp" >&2
touch "$libs.tmp/.complete"
rm -rf "$libs" && mv "$libs.tmp" "$libs"
echo "$libs"
