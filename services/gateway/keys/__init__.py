"""API keys at the gateway: the check, the process cache, and what keeps it current."""
