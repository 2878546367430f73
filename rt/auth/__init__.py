"""Keys, scopes, tiers, the request guard, the rate limiter and the audit log."""
