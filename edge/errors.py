"""The error hierarchy: third-party exceptions are translated into these at module boundaries."""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error edgegw raises on purpose."""


class ConfigError(EdgeError):
    """A configuration file or value is wrong; the message names the file, line and key."""


class DriverError(EdgeError):
    """A camera or serial device failed or cannot be opened."""


class ModelError(EdgeError):
    """A model is missing, fails verification or cannot be run."""


class OutboxError(EdgeError):
    """The durable outbox cannot store or hand out events."""


class PublishError(EdgeError):
    """Publishing to the broker failed."""


class KeyFileError(EdgeError):
    """A secret key file is missing, malformed or readable by others."""


class PrivacyError(EdgeError):
    """Something tried to carry an identifier across the privacy boundary in clear."""
