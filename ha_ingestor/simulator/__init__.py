"""A simulated Home Assistant that speaks the real WebSocket and REST protocol."""
