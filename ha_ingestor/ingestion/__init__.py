"""Source: the Home Assistant WebSocket client, the durable outbox, the forwarder and gap backfill."""
