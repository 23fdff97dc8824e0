#!/bin/sh
# Entrypoint of the local-cluster Kafka image (scripts/k8s/build-images.sh): one KRaft node
# that is broker and controller at once. Formats the data directory on first start, then
# runs kafka.Kafka. Development only: one replica of everything, no durability guarantees.
#
# Environment:
#   KAFKA_ADVERTISED_HOST   host name clients are told to use (the Service's DNS name)
#   KAFKA_PORT              PLAINTEXT client listener port (9092)
#   KAFKA_DATA_DIR          log.dirs (/var/lib/kafka/data); formatted when it has no meta.properties
#   KAFKA_HEAP_OPTS         JVM heap flags (-Xms256m -Xmx320m)
#   KAFKA_JVM_OPTS          more JVM flags
#   KAFKA_NUM_PARTITIONS    default partitions of auto-created topics (4)
# A second client listener, SASL_SSL with SCRAM-SHA-256, when KAFKA_SASL_SSL_PORT is set:
#   KAFKA_SASL_SSL_PORT     its port (e.g. 9093)
#   KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD  the SCRAM user, created when the storage is
#                           formatted (a new password needs a new data directory); neither
#                           may contain ',' or '"'
#   KAFKA_TLS_DIR           directory with tls.crt (server certificate, then any chain) and
#                           tls.key (PKCS#8 PEM, "BEGIN PRIVATE KEY", unencrypted)
# Inside the pod the broker talks to itself on 127.0.0.1:9191 (PLAINTEXT) and the
# controller listens on 127.0.0.1:9193; neither is reachable from outside the pod.
set -eu

KAFKA_HOME="${KAFKA_HOME:-/opt/kafka}"
data="${KAFKA_DATA_DIR:-/var/lib/kafka/data}"
conf_dir="${KAFKA_CONFIG_DIR:-/tmp/kafka-config}"
host="${KAFKA_ADVERTISED_HOST:-localhost}"
port="${KAFKA_PORT:-9092}"
sasl_port="${KAFKA_SASL_SSL_PORT:-}"
java="${JAVA_HOME:-/opt/java}/bin/java"
classpath="$KAFKA_HOME/libs/*"

listeners="CLIENT://0.0.0.0:$port,INTERNAL://127.0.0.1:9191,CONTROLLER://127.0.0.1:9193"
advertised="CLIENT://$host:$port,INTERNAL://127.0.0.1:9191"
protocols="CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
if [ -n "$sasl_port" ]; then
  listeners="$listeners,SECURE://0.0.0.0:$sasl_port"
  advertised="$advertised,SECURE://$host:$sasl_port"
  protocols="$protocols,SECURE:SASL_SSL"
fi

mkdir -p "$conf_dir" "$data"
props="$conf_dir/server.properties"
cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9193
controller.listener.names=CONTROLLER
listeners=$listeners
advertised.listeners=$advertised
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=$protocols
log.dirs=$data
num.partitions=${KAFKA_NUM_PARTITIONS:-4}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS

scram=""
if [ -n "$sasl_port" ]; then
  user="${KAFKA_SASL_USERNAME:?KAFKA_SASL_USERNAME is required with KAFKA_SASL_SSL_PORT}"
  password="${KAFKA_SASL_PASSWORD:?KAFKA_SASL_PASSWORD is required with KAFKA_SASL_SSL_PORT}"
  # kafka-storage's --add-scram splits its argument at every ',' and strips quotes.
  case "$user$password" in *'"'* | *,*)
    echo "kafka-entrypoint: the SASL user name and password must not contain ',' or '\"'" >&2
    exit 1 ;;
  esac
  tls="${KAFKA_TLS_DIR:?KAFKA_TLS_DIR is required with KAFKA_SASL_SSL_PORT}"
  for f in tls.crt tls.key; do
    [ -s "$tls/$f" ] || { echo "kafka-entrypoint: $tls/$f is missing" >&2; exit 1; }
  done
  if ! grep -q -- '-----BEGIN PRIVATE KEY-----' "$tls/tls.key"; then
    echo "kafka-entrypoint: $tls/tls.key must be an unencrypted PKCS#8 key (BEGIN PRIVATE KEY);" \
      "convert it with: openssl pkcs8 -topk8 -nocrypt -in key.pem -out tls.key" >&2
    exit 1
  fi
  # Kafka's PEM key store: the private key and the certificate chain in one file.
  (umask 077; cat "$tls/tls.key" "$tls/tls.crt" >"$conf_dir/keystore.pem")
  cat >>"$props" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.secure.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.secure.ssl.keystore.type=PEM
listener.name.secure.ssl.keystore.location=$conf_dir/keystore.pem
listener.name.secure.ssl.client.auth=none
PROPS
  scram="SCRAM-SHA-256=[name=\"$user\",password=\"$password\"]"
fi

if [ ! -f "$data/meta.properties" ]; then
  # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding.
  cluster_id="${KAFKA_CLUSTER_ID:-$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)}"
  echo "kafka-entrypoint: formatting $data (cluster $cluster_id)"
  if [ -n "$scram" ]; then
    "$java" -XX:-UsePerfData -cp "$classpath" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" \
      --add-scram "$scram"
  else
    "$java" -XX:-UsePerfData -cp "$classpath" kafka.tools.StorageTool format -t "$cluster_id" -c "$props"
  fi
fi

# shellcheck disable=SC2086 # the option variables hold several flags
exec "$java" ${KAFKA_HEAP_OPTS:--Xms256m -Xmx320m} -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData \
  -Djava.awt.headless=true ${KAFKA_JVM_OPTS:-} \
  -Dlog4j2.configurationFile="$KAFKA_HOME/config/log4j2.properties" \
  -cp "$classpath" kafka.Kafka "$props"
