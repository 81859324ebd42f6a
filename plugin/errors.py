"""Errors StoreSight expects and reports without a traceback (each carries the exit code the CLI uses), and the three
outcomes every sink maps its failures to (ARCHITECTURE.md: auth, not ready, rejected)."""

from __future__ import annotations


class StoreSightError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1


class ConfigError(StoreSightError):
    """The configuration file is unreadable or invalid."""

    exit_code = 2


class ModelError(StoreSightError):
    """A model file is missing, unreadable or fails its checksum."""


class StorageError(StoreSightError):
    """The data folder or its database cannot be used as this release needs (a newer schema, a damaged key file)."""


class InferenceUnavailable(StoreSightError):
    """Triton cannot be reached or the model is not ready (retry later)."""


class SourceError(StoreSightError):
    """A camera source cannot be opened or read."""


class CameraAuthError(SourceError):
    """The camera rejected the configured credentials: not retried (cameras lock accounts), shown in readiness."""


class SinkAuthError(Exception):
    """Credentials rejected: do not retry until configuration changes; surface in readiness."""


class SinkNotReady(Exception):
    """Temporarily unavailable (network, 5xx, timeout): retry with backoff."""


class SinkRejected(Exception):
    """The sink refused this delivery for good (schema, 4xx): keep it for inspection, never retry."""
