"""Ways out of marketstream for people and programs: the HTTP API and the WebSocket gateway."""
