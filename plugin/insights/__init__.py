"""Insights: hourly rollups, Prometheus metrics and StoreSight's own health."""
