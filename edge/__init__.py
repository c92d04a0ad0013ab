"""edgegw: a smart-community edge gateway (local inference, keyed pseudonyms, durable MQTT uplink)."""

__version__ = "0.1.0"
