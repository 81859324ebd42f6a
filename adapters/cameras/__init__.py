"""Camera sources: RTSP streams and files (OpenCV), ONVIF devices (probe, events, discovery)."""
