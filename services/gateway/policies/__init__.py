"""Key policies at the gateway: scopes, rate limits and budgets, shared by every replica."""
