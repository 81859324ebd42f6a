"""The storesight command line."""
