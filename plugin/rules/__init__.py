"""Rules: pure, synchronous judges of what the camera sees; the registry (registry.py) lists them."""
