"""Loading the gateway's secrets from config: key files relative to the data dir, or systemd credentials."""

from __future__ import annotations

import os
from pathlib import Path

from edge.config import Config
from edge.keys import load_secret


def _locate(cfg: Config, name: str) -> str:
    # A bare name that systemd passed as a credential wins; otherwise a relative path is taken
    # relative to the gateway's data directory.
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and "/" not in name and (Path(cred_dir) / name).exists():
        return name
    path = Path(name)
    return str(path if path.is_absolute() else cfg.gateway.data_dir / path)


def district_key(cfg: Config) -> bytes:
    """The district (pseudonym) key."""
    return load_secret(_locate(cfg, cfg.privacy.district_key_file), purpose="district pseudonym key")


def data_key(cfg: Config) -> bytes:
    """The data-at-rest key (resident gallery, passage store); separate from the pseudonym key."""
    return load_secret(_locate(cfg, cfg.storage.data_key_file), purpose="data-at-rest key")


def mqtt_password(cfg: Config) -> str | None:
    """The broker password, if one is configured."""
    if not cfg.mqtt.password_file:
        return None
    raw = Path(_locate(cfg, cfg.mqtt.password_file)).read_text(encoding="utf-8")
    return raw.strip()
