"""Building the gateway's shared objects from its config: the one place each is made.

Every daemon (capture, uplink, query, the residents and check commands) gets its outbox, origin,
keys, audit log and passage store from here, so each is built one way. This module imports only
light wings (no OpenCV, ONNX Runtime or pyserial): the uplink daemon uses it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge.app.config import Config
from edge.audit import AuditLog, HeadSigner
from edge.diskbudget import PASSAGE_BYTES_PER_EVENT
from edge.errors import ConfigError, KeyFileError
from edge.keys import check_private_file, load_secret, read_private_text, resolve_secret_path
from edge.models.config import RuntimeOptions
from edge.outbox import Outbox
from edge.passages.fusion import PassageFusion
from edge.passages.store import PassageStore
from edge.principals import PrincipalRegistry
from edge.privacy.boundary import PrivacyBoundary
from edge.privacy.epochkeys import EpochKeyring, RootKeySource
from edge.privacy.identity import GatewayIdentity, sign_audit_head
from edge.privacy.pseudonym import Pseudonymiser
from edge.query.casekeys import CaseKeys
from edge.types import Origin
from edge.watchlist import WatchlistStore, load_public_key

log = logging.getLogger(__name__)


def origin_of(cfg: Config) -> Origin:
    """The gateway's district/community/gateway ids."""
    return Origin(cfg.gateway.district, cfg.gateway.community, cfg.gateway.gateway)


def runtime_options(cfg: Config) -> RuntimeOptions:
    """ONNX Runtime options from config."""
    return cfg.models.runtime_options()


def state_databases(cfg: Config) -> tuple[Path, ...]:
    """The gateway's SQLite files besides the outbox: they share its disk budget (edge.diskbudget)."""
    paths = [cfg.audit.path, cfg.storage.residents_db]
    if cfg.passages.enabled:
        paths += [cfg.passages.path, cfg.passages.keys_path]
    return tuple(cfg.path(p) for p in paths)


def make_outbox(cfg: Config) -> Outbox:
    """The outbox configured for this gateway (its quota budgets every state database's WAL)."""
    per_event = PASSAGE_BYTES_PER_EVENT if cfg.passages.enabled else 0.0
    return Outbox(cfg.path(cfg.outbox.path), topic_prefix=cfg.mqtt.topic_prefix,
                  limits=cfg.outbox.limits(state_databases(cfg), per_event))


# -- secrets: one resolver (edge.keys.resolve_secret_path), relative paths in the data directory ----
def secret_path(cfg: Config, name: str) -> Path:
    """Where a configured secret lives: a systemd credential of that name, else a path in data_dir."""
    return resolve_secret_path(name, cfg.gateway.data_dir)


def district_key(cfg: Config) -> bytes:
    """The district root key, where a development config names one (`privacy.district_key_file`)."""
    if cfg.privacy.district_key_file is None:
        raise KeyFileError("this gateway holds no district root key (privacy.district_key_file is unset): its "
                           "epoch keys come wrapped from the district's key service")
    return load_secret(secret_path(cfg, cfg.privacy.district_key_file), purpose="district pseudonym key")


def gateway_identity(cfg: Config) -> GatewayIdentity:
    """The gateway's identity (X25519 for its epoch keys, Ed25519 for its signatures)."""
    return GatewayIdentity(load_secret(secret_path(cfg, cfg.privacy.gateway_key_file), purpose="gateway identity"))


def open_keyring(cfg: Config, identity: GatewayIdentity | None = None) -> EpochKeyring:
    """The store of wrapped epoch keys, opened with the gateway's identity; keys past their window are
    destroyed on opening."""
    ring = EpochKeyring(cfg.path(cfg.privacy.epoch_keys_path), identity or gateway_identity(cfg),
                        district=cfg.gateway.district, community=cfg.gateway.community, gateway=cfg.gateway.gateway,
                        policy=cfg.privacy.epoch.value,
                        trusted_signer=bytes.fromhex(cfg.privacy.key_service_public_key)
                        if cfg.privacy.key_service_public_key else None)
    ring.purge()
    return ring


def data_key(cfg: Config) -> bytes:
    """The data-at-rest key (resident gallery, passage store); separate from the pseudonym key."""
    return load_secret(secret_path(cfg, cfg.storage.data_key_file), purpose="data-at-rest key")


def mqtt_password(cfg: Config) -> str | None:
    """The broker password, if one is configured; first refuses a TLS private key others can read.

    Every MQTT client of the gateway (uplink, query door) asks for its password before it connects,
    so this is where both broker secrets get the key-file permission check.
    """
    tls = cfg.mqtt.tls
    if tls is not None and tls.key_file is not None:
        check_private_file(cfg.path(tls.key_file), purpose="MQTT TLS private key")
    if not cfg.mqtt.password_file:
        return None
    # The same owner-only rule as key files: a world-readable password is refused, not used.
    return read_private_text(secret_path(cfg, cfg.mqtt.password_file), purpose="MQTT password").strip()


def privacy_boundary(cfg: Config) -> PrivacyBoundary:
    """The boundary that turns this gateway's observations into publishable events."""
    return PrivacyBoundary(pseudonymiser(cfg), origin_of(cfg))


def head_signer(cfg: Config, identity: GatewayIdentity | None = None) -> HeadSigner | None:
    """Signs the audit head for the status message with the gateway's key (None in a development config
    that has a root key and no gateway identity)."""
    if identity is None:
        if cfg.privacy.district_key_file is not None and not secret_path(cfg, cfg.privacy.gateway_key_file).exists():
            return None
        identity = gateway_identity(cfg)
    signer, gateway = identity, cfg.gateway.gateway
    return lambda seq, digest: sign_audit_head(signer, gateway, seq, digest, round(time.time(), 3))


def pseudonymiser(cfg: Config) -> Pseudonymiser:
    """Keyed pseudonyms under this gateway's epoch keys and the configured epoch policy.

    A development config with `privacy.district_key_file` derives them from that root key instead.
    """
    if cfg.privacy.district_key_file is not None:
        log.warning("privacy.district_key_file is set: this machine holds the district root key (development "
                    "only; a gateway in the field imports wrapped epoch keys, see docs/keys.md)")
        return Pseudonymiser(RootKeySource(district_key(cfg), cfg.gateway.community), cfg.privacy.epoch)
    return Pseudonymiser(open_keyring(cfg), cfg.privacy.epoch)


# -- audit log and passage store --------------------------------------------------------------------
def open_audit(cfg: Config) -> AuditLog:
    """The gateway's audit log (created on first use)."""
    path = cfg.path(cfg.audit.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anchor = cfg.path(cfg.audit.anchor_path) if cfg.audit.anchor_path is not None else None
    return AuditLog(path, anchor_path=anchor)


def open_registry(cfg: Config) -> PrincipalRegistry:
    """The gateway's one principal registry (edge.principals), shared by the console and the query door."""
    return PrincipalRegistry(cfg.path(cfg.principals.registry))


def open_case_keys(cfg: Config) -> CaseKeys:
    """The per-case keys of the audit's digests."""
    return CaseKeys(cfg.path(cfg.audit.case_keys_path), max_age_days=cfg.audit.case_key_days)


def open_store(cfg: Config, key: bytes, audit: AuditLog, *,
               clock: Callable[[], float] = time.time) -> PassageStore:
    """The passage store at `passages.path`, its keys at `passages.keys_path`."""
    pcfg = cfg.passages
    return PassageStore.open(cfg.path(pcfg.path), cfg.path(pcfg.keys_path), key, pcfg, audit, clock=clock)


def build_passage_observers(cfg: Config, key: bytes, audit: AuditLog, *,
                            clock: Callable[[], float] = time.time) -> list[PassageStore | PassageFusion]:
    """[store, fusion] for the Committer, in that order; [] when `passages.enabled` is false.

    The store comes first so a passage's members are on disk before the passage that links them.
    The caller owns them: `close()` each after the Committer's last `tick(float("inf"))`.
    """
    if not cfg.passages.enabled:
        return []
    return [open_store(cfg, key, audit, clock=clock), PassageFusion(cfg.passages, clock=clock)]


# -- watch-lists ------------------------------------------------------------------------------------
def open_watchlist(cfg: Config, audit: AuditLog | None) -> WatchlistStore | None:
    """The gateway's watch-list store on `watchlist.state`; None unless `watchlist.enabled`.

    Both daemons open one on the same state file: the uplink's receives lists from the broker and
    writes the file, capture's matches and reloads it (`reload_if_changed`). Refusals, acceptances and
    hits go to the audit log, which is safe for two writing processes (BEGIN IMMEDIATE, locked anchor).
    """
    wcfg = cfg.watchlist
    if not wcfg.enabled:
        return None
    key_path = secret_path(cfg, wcfg.public_key)
    try:
        key = load_public_key(key_path)
    except OSError as exc:
        raise ConfigError(f"watchlist.public_key: cannot read {key_path}: {exc.strerror or exc}") from None
    state = cfg.path(Path(wcfg.state))
    state.parent.mkdir(parents=True, exist_ok=True)
    return WatchlistStore(key, cfg.gateway.district, state, audit=audit)
