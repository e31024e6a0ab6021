#!/bin/bash
# The compose broker's health check: the operator can log in and list the API versions.
set -euo pipefail
umask 077
client=/tmp/sluice-kafka/health.properties
mkdir -p /tmp/sluice-kafka
cat > "$client" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="sluice-operator" password="${KAFKA_OPERATOR_PASSWORD:?}";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/sluice/kafka/ca.pem
PROPERTIES
exec /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server kafka:9092 \
  --command-config "$client" >/dev/null
