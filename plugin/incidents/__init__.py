"""Incidents: from rule hits to stored incidents with explanation and evidence, and their delivery through the
outbox."""
