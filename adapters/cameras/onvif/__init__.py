"""ONVIF: the device probe, the camera source, PullPoint events and WS-Discovery."""
