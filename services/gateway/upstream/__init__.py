"""The upstream side: each model's route, and the pooled HTTP client that calls it."""
