"""Incident sinks: each delivers incidents from the outbox to one product."""
