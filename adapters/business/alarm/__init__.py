"""Alarm-panel sources: each receives a panel protocol and hands BusinessEvents of kind `alarm.<kind>` to the hub."""
