#!/bin/sh
# Runs a Kafka class with the jars on the class path, as Kafka's own script of this name does.
# Tools get a small, quickly started JVM; the broker's heap is KAFKA_HEAP_OPTS.
exec java ${KAFKA_TOOL_OPTS:--Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1} \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp '/opt/kafka/libs/*' "$@"
