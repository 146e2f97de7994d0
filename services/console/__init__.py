"""The web dashboard: sign-in with the operator token, projects, API Keys and Usage pages."""
