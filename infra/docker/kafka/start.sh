#!/bin/bash
# The compose broker's entry point: render server.properties with the broker's password,
# format the storage once (storing the broker's and the operator's SCRAM credentials),
# then run Kafka. Passwords come from the environment, never from a file in the image.
set -euo pipefail
: "${KAFKA_BROKER_PASSWORD:?}" "${KAFKA_OPERATOR_PASSWORD:?}"
config=/tmp/sluice-kafka/server.properties
mkdir -p /tmp/sluice-kafka
umask 077
sed "s|@BROKER_PASSWORD@|${KAFKA_BROKER_PASSWORD}|" /opt/sluice/server.properties > "$config"
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  cluster_id=$(/opt/kafka/bin/kafka-storage.sh random-uuid)
  /opt/kafka/bin/kafka-storage.sh format -t "$cluster_id" -c "$config" \
    --add-scram "SCRAM-SHA-512=[name=sluice-broker,password=${KAFKA_BROKER_PASSWORD}]" \
    --add-scram "SCRAM-SHA-512=[name=sluice-operator,password=${KAFKA_OPERATOR_PASSWORD}]"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$config"
