"""rt: a self-hosted, WebSocket-first real-time trading gateway."""

__version__ = "0.1.0"
