"""The WebSocket gateway: bars to trading screens and bots, snapshot then live, resumable."""
