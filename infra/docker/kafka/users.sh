#!/bin/bash
# One-shot (the kafka-users service): as the operator, store the SCRAM credential of every
# Sluice principal other than the broker and the operator. Run on every `docker compose up`,
# so a changed password takes effect (restart the processor that uses it afterwards).
set -euo pipefail
umask 077
client=/tmp/operator.properties
cat > "$client" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="sluice-operator" password="${KAFKA_OPERATOR_PASSWORD:?}";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/sluice/kafka/ca.pem
PROPERTIES
for principal in validate guard infer meter sink drift gateway connect registry; do
  variable="KAFKA_$(echo "$principal" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  /opt/kafka/bin/kafka-configs.sh --bootstrap-server kafka:9092 --command-config "$client" \
    --alter --entity-type users --entity-name "sluice-$principal" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=${!variable:?$variable is not set}]"
done
# The Confluent registry starts before init (init registers the schemas through it), so
# its grants cannot wait for `sluice acl apply`: its _schemas topic and its groups, here.
# schemas/acls.yaml does not declare sluice-registry, so acl apply leaves these alone.
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:9092 --command-config "$client" --add \
  --allow-principal User:sluice-registry --topic _schemas --operation Create \
  --operation Read --operation Write --operation Describe --operation DescribeConfigs
/opt/kafka/bin/kafka-acls.sh --bootstrap-server kafka:9092 --command-config "$client" --add \
  --allow-principal User:sluice-registry --group schema-registry \
  --resource-pattern-type prefixed --operation Read --operation Describe
