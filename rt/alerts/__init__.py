"""Inbound alerts: hooks a TradingView-style sender posts to; each alert is authenticated, deduplicated and traded
through the same engine path as POST /v1/orders."""
