"""Door events from access-control software."""
