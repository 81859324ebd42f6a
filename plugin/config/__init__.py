"""Configuration: strict pydantic models by section (base, service, cameras, pos, access, alarms, occupancy, sinks),
the root that assembles them (root), the cross-object checks (verify) and the YAML loader (loader)."""
