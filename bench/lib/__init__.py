"""What the benchmarks share (upstream, load generator, /proc readers); never run as a benchmark."""
