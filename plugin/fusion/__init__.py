"""Business signals fused with video: the hub (durable intake), POS, access control, alarm panels and store
occupancy."""
