#!/bin/bash
# Entrypoint of compose.yaml's `kafka` service (image apache/kafka): the same secured
# single-node KRaft broker as services/localstack/kafka_local.py, configured from
# the environment that compose interpolates from deploy/.env:
#   KAFKA_BROKER_PASSWORD, KAFKA_ADMIN_PASSWORD, KAFKA_INGEST_PASSWORD,
#   KAFKA_BUDSJETT_PASSWORD, KAFKA_MILEPAEL_PASSWORD.
# SCRAM users are created in the metadata log when the storage is formatted (first
# start), through a 0600 java @argfile so no password is on a command line.
set -euo pipefail
: "${KAFKA_BROKER_PASSWORD:?}" "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_INGEST_PASSWORD:?}"
: "${KAFKA_BUDSJETT_PASSWORD:?}" "${KAFKA_MILEPAEL_PASSWORD:?}"
KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
DATA=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
CONFIG=$(mktemp -d)/server.properties
umask 077

cat >"$CONFIG" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=localhost:9093
controller.listener.names=CONTROLLER
listeners=CLIENT://:9092,CONTROLLER://localhost:9093
advertised.listeners=CLIENT://${KAFKA_ADVERTISED_HOST:-kafka}:9092
# Containers talk over compose's private network; use SASL_SSL when clients are on other hosts.
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}" user_broker="${KAFKA_BROKER_PASSWORD}";
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="${KAFKA_BROKER_PASSWORD}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
connections.max.reauth.ms=300000
super.users=User:broker;User:admin
log.dirs=${DATA}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.partitions=4
log.retention.hours=-1
EOF

if [ ! -f "$DATA/meta.properties" ]; then
  ARGS=$(mktemp)
  {
    echo kafka.tools.StorageTool format --standalone -t "$(cat /proc/sys/kernel/random/uuid | tr -d - | cut -c1-22)" -c "$CONFIG"
    for user in broker admin ingest budsjett milepael; do
      variable="KAFKA_${user^^}_PASSWORD"
      echo "--add-scram SCRAM-SHA-512=[name=${user},password=${!variable}]"
    done
  } >"$ARGS"
  java -cp "$KAFKA_HOME/libs/*" "@$ARGS"
  rm -f "$ARGS"
fi
exec "$KAFKA_HOME/bin/kafka-server-start.sh" "$CONFIG"
