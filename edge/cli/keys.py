"""`edgegw keys init|public|import|status`: the gateway's identity and its wrapped epoch keys."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.compat import UTC


def _identity_path(args: argparse.Namespace) -> Path:
    from edge.app.config import load_config
    from edge.app.wiring import secret_path
    from edge.errors import EdgeError

    if not args.config:
        raise EdgeError("give --config (the key goes to its privacy.gateway_key_file) or --path")
    cfg = load_config(Path(args.config))
    return secret_path(cfg, cfg.privacy.gateway_key_file)


def cmd_init(args: argparse.Namespace) -> int:
    """Create the gateway identity seed (0600) and print the public key to register at the district."""
    from edge.privacy.identity import GatewayIdentity

    path = Path(args.path) if args.path else _identity_path(args)
    identity = GatewayIdentity.generate(path, force=args.force)
    print(f"created {path} (mode 0600), gateway key fingerprint {identity.public.fingerprint}", file=sys.stderr)
    print(identity.public.text())
    return 0


def cmd_public(args: argparse.Namespace) -> int:
    """Print the gateway's public key (safe to share)."""
    from edge.keys import load_secret
    from edge.privacy.identity import GatewayIdentity

    path = Path(args.path) if args.path else _identity_path(args)
    identity = GatewayIdentity(load_secret(path, purpose="gateway identity"))
    print(identity.public.text())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Import a bundle of epoch keys issued by the district's key service."""
    from edge.app.config import load_config
    from edge.app.wiring import open_audit, open_keyring

    cfg = load_config(Path(args.config))
    text = sys.stdin.buffer.read() if args.bundle == "-" else Path(args.bundle).read_bytes()
    with open_keyring(cfg) as ring:
        report = ring.import_bundle(text)
    audit = open_audit(cfg)
    try:
        audit.append("cli:keys", "key_import", {"root": report.root, "imported": report.imported,
                                                "expired": report.expired, "epochs": list(report.epochs)})
    finally:
        audit.close()
    print(f"imported {report.imported} epoch key(s) of root {report.root} "
          f"(epochs {', '.join(report.epochs) or 'none'}); {report.expired} already past their window")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """List the epoch keys held (kind, epoch, expiry; never key material); destroys expired ones first."""
    from edge.app.config import load_config
    from edge.app.wiring import open_keyring

    with open_keyring(load_config(Path(args.config))) as ring:
        for h in ring.held():
            until = datetime.fromtimestamp(h.not_after, UTC).strftime("%Y-%m-%dT%H:%MZ")
            print(f"{h.kind.value}\t{h.root}.{h.epoch}\tdestroyed after {until}")
    return 0


def add_commands(keys_sub: Any) -> None:
    """Add the identity and epoch-key commands to the `keys` group."""
    init = keys_sub.add_parser("init", help="create this gateway's identity key and print its public key")
    init.add_argument("--config", help="gateway config (the key goes to privacy.gateway_key_file)")
    init.add_argument("--path", help="write the seed here instead")
    init.add_argument("--force", action="store_true", help="replace an existing identity (old bundles stop opening)")
    init.set_defaults(func=cmd_init)
    pub = keys_sub.add_parser("public", help="print this gateway's public key (to register at the district)")
    pub.add_argument("--config")
    pub.add_argument("--path")
    pub.set_defaults(func=cmd_public)
    imp = keys_sub.add_parser("import", help="import epoch keys wrapped to this gateway by the district")
    imp.add_argument("--config", required=True)
    imp.add_argument("bundle", help="the bundle file, or - for stdin")
    imp.set_defaults(func=cmd_import)
    st = keys_sub.add_parser("status", help="which epoch keys this gateway holds, and until when")
    st.add_argument("--config", required=True)
    st.set_defaults(func=cmd_status)
