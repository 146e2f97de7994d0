"""What the gateway tells operators: Prometheus metrics and whether tracing is configured."""
