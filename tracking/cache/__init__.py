"""The Redis cache: the atomic per-event state step, and the embedded server."""
