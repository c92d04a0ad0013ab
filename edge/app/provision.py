"""Development provisioning: play the district's key service locally (the demo, tests, a bench).

A field gateway is provisioned by the district (`edgegw keys init`, register the public key,
`edgegw keys import` the bundle the key service issued). The demo has no district, so this module
stands in for one: it keeps a root key *outside* the gateway's data directory, issues a bundle from
it with the real key service, and imports it through the real keyring, so the gateway runs exactly
as in the field, without a root key of its own.
"""

from __future__ import annotations

from pathlib import Path

from district.keyservice import KeyService
from edge.app.config import Config
from edge.app.wiring import open_keyring, secret_path
from edge.keys import generate_key_file, load_key_file
from edge.privacy.epochkeys import ImportReport
from edge.privacy.identity import GatewayIdentity


def provision_epoch_keys(cfg: Config, root_key_file: Path, *, now: float | None = None,
                         window_days: float | None = None) -> ImportReport:
    """Create the gateway identity (if missing) and the stand-in district root key (if missing), issue
    a bundle covering the retention window and import it; returns the import report."""
    ident_path = secret_path(cfg, cfg.privacy.gateway_key_file)
    identity = (GatewayIdentity(load_key_file(ident_path, purpose="gateway identity")) if ident_path.exists()
                else GatewayIdentity.generate(ident_path))
    root_key_file.parent.mkdir(parents=True, exist_ok=True)
    root = (load_key_file(root_key_file, purpose="district root") if root_key_file.exists()
            else generate_key_file(root_key_file))
    signing_file = root_key_file.with_name(root_key_file.stem + ".signing.key")
    signing = (load_key_file(signing_file, purpose="key service signing") if signing_file.exists()
               else generate_key_file(signing_file))
    window = cfg.passages.retention.records_days if window_days is None else window_days
    bundle = KeyService(root, cfg.privacy.epoch, signing_seed=signing).issue(
        identity.public, district=cfg.gateway.district, community=cfg.gateway.community,
        gateway=cfg.gateway.gateway, window_days=window, ahead_days=35.0, now=now)
    with open_keyring(cfg, identity) as ring:
        report = ring.import_bundle(bundle)
    return report
