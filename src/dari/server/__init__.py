"""The server: transports (WebSocket, REST; more later), sessions, rate limits, metrics."""
