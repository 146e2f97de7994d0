"""A request's usage: metered, built into an event, published to Kafka or spooled."""
