"""The district's key service: the only holder of the root pseudonym key.

It derives the epoch keys (`edge.privacy.epochkeys.derive_epoch_key`) and issues each gateway a
bundle of the epochs inside that gateway's retention window, wrapped to the gateway's registered
X25519 key (X25519 + HKDF-SHA256 + AES-256-GCM). A gateway therefore never sees the root key: a
stolen one exposes only the epochs it still held, and only until those expire. Resident keys are
derived per community, so a gateway of one community cannot compute another's resident pseudonyms.

It also checks the audit heads gateways publish in their retained status (`verify_head`): a head
signed by the gateway's registered Ed25519 key, which the platform stores to detect a later rewrite.

CLI: `register(sub)` adds `keyservice issue|verify-head` to an argparse parser (the district CLI wires
it in); `python -m district.keyservice issue ...` runs it standalone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.keys import key_fingerprint, load_secret
from edge.privacy.config import EpochPolicy
from edge.privacy.epochkeys import BundleEntry, BundleHeader, derive_epoch_key, seal_bundle
from edge.privacy.identity import GatewayPublic, verify_audit_head
from edge.privacy.pseudonym import Pseudonymiser, epoch_bounds, epochs_between
from edge.types import IdKind
from edge.watchlist import WatchEntry, pseudonym_entries

DAY_S = 86400.0


class KeyService:
    """Issues wrapped epoch-key bundles from the root key (which it never hands out)."""

    def __init__(self, root_key: bytes, policy: EpochPolicy = EpochPolicy.MONTH, *,
                 signing_seed: bytes | None = None) -> None:
        if len(root_key) < 32:
            raise ValueError("the district root key must be at least 32 bytes")
        self._root = root_key
        self.policy = policy
        self.fingerprint = key_fingerprint(root_key)
        # The signing key: gateways that pin its public key accept only bundles this service made
        # (anyone with a gateway's public key could otherwise wrap keys of their own choosing to it).
        self._signer: Ed25519PrivateKey | None = None
        if signing_seed is not None:
            self._signer = Ed25519PrivateKey.from_private_bytes(HKDF(
                algorithm=hashes.SHA256(), length=32, salt=b"edgegw/key-service/v1", info=b"bundle signing",
            ).derive(signing_seed))

    @property
    def signing_public_key(self) -> bytes | None:
        """The Ed25519 public key gateways pin as `privacy.key_service_public_key` (hex)."""
        if self._signer is None:
            return None
        return self._signer.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def __repr__(self) -> str:
        return f"KeyService({self.fingerprint})"

    def issue(self, recipient: GatewayPublic, *, district: str, community: str, gateway: str,
              window_days: float, ahead_days: float = 35.0, now: float | None = None,
              kinds: Iterable[IdKind] = tuple(IdKind)) -> str:
        """A bundle for one gateway: every epoch from `window_days` ago to `ahead_days` ahead.

        Each key expires (`not_after`) `window_days` after its epoch ends: by then the gateway has
        purged everything observed in that epoch, so it has no use for the key, and destroys it.
        """
        if window_days <= 0 or ahead_days < 0:
            raise ValueError("window_days must be positive and ahead_days non-negative")
        now = time.time() if now is None else now
        entries: list[BundleEntry] = []
        for label in epochs_between(self.policy, now - window_days * DAY_S, now + ahead_days * DAY_S):
            _, end = epoch_bounds(self.policy, _label_start(self.policy, label))
            not_after = end + window_days * DAY_S
            if not_after <= now:
                continue
            entries += [BundleEntry(k, label, not_after, derive_epoch_key(self._root, k, label, community))
                        for k in kinds]
        header = BundleHeader(district, community, gateway, recipient.fingerprint, self.fingerprint,
                              self.policy.value, round(now, 3))
        public = self.signing_public_key
        signer = (public, self._signer.sign) if self._signer is not None and public is not None else None
        return seal_bundle(header, entries, recipient, signer)

    def watch_entries(self, kind: IdKind, values: Iterable[str], at: float, *,
                      epochs_ahead: int = 1) -> list[WatchEntry]:
        """Watch-list entries for raw `values`: their pseudonyms in the epoch of `at` and the next ones.

        The values are used here, with the root key, and go no further: a watch-list holds only what
        this returns (`edge.watchlist.pseudonym_entries`, the gateways' own derivation and format).
        """
        return pseudonym_entries(Pseudonymiser(self._root, self.policy), kind, values, at, epochs_ahead=epochs_ahead)


def _label_start(policy: EpochPolicy, label: str) -> float:
    """A time inside epoch `label` (its first day)."""
    from datetime import datetime

    from edge.compat import UTC

    if policy is EpochPolicy.MONTH:
        return datetime.strptime(label + "-01", "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    if policy is EpochPolicy.WEEK:
        return datetime.strptime(label + "-1", "%G-W%V-%u").replace(tzinfo=UTC).timestamp()
    return datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def verify_head(public: GatewayPublic, gateway: str, status: dict[str, Any]) -> bool:
    """Whether a gateway's retained status carries an audit head signed by that gateway's key."""
    head = status.get("audit_head")
    return isinstance(head, dict) and head.get("signer") == public.fingerprint and \
        verify_audit_head(public, gateway, head)


# -- command line ------------------------------------------------------------------------------------
def _service(args: argparse.Namespace) -> KeyService:
    seed = load_secret(args.signing_key, purpose="key service signing") if args.signing_key else None
    return KeyService(load_secret(args.root, purpose="district root"), EpochPolicy(args.epoch), signing_seed=seed)


def _cmd_issue(args: argparse.Namespace) -> int:
    service = _service(args)
    recipient = GatewayPublic.parse(Path(args.gateway_public).read_text() if Path(args.gateway_public).is_file()
                                    else args.gateway_public)
    text = service.issue(recipient, district=args.district, community=args.community, gateway=args.gateway,
                         window_days=args.window_days, ahead_days=args.ahead_days)
    Path(args.out).write_text(text, encoding="ascii")
    n = len(json.loads(text)["keys"])
    print(f"wrote {args.out}: {n} epoch key(s) for {args.district}/{args.community}/{args.gateway}, wrapped to "
          f"gateway key {recipient.fingerprint}, root {service.fingerprint}")
    return 0


def _cmd_public(args: argparse.Namespace) -> int:
    public = _service(args).signing_public_key
    assert public is not None  # --signing-key is required for this command
    print(public.hex())
    return 0


def _cmd_verify_head(args: argparse.Namespace) -> int:
    status = json.loads(Path(args.status).read_text(encoding="utf-8"))
    ok = verify_head(GatewayPublic.parse(args.gateway_public), args.gateway, status)
    print("audit head signature: " + ("valid" if ok else "INVALID"))
    return 0 if ok else 1


def register(sub: Any) -> None:
    """Add `keyservice issue|verify-head` to an argparse sub-parser set."""
    p = sub.add_parser("keyservice", help="the district key service: epoch-key bundles for gateways")
    ks = p.add_subparsers(dest="keyservice_command", required=True)
    issue = ks.add_parser("issue", help="issue a gateway its epoch keys, wrapped to its public key")
    issue.add_argument("--root", required=True, help="the district root key file (or systemd credential)")
    issue.add_argument("--gateway-public", required=True,
                       help="the gateway's public key (edgegw-gw1:...) or a file holding it")
    issue.add_argument("--district", required=True)
    issue.add_argument("--community", required=True)
    issue.add_argument("--gateway", required=True)
    issue.add_argument("--epoch", default="month", choices=[e.value for e in EpochPolicy])
    issue.add_argument("--window-days", type=float, default=30.0,
                       help="the gateway's retention window: keys expire this long after their epoch")
    issue.add_argument("--ahead-days", type=float, default=35.0,
                       help="future days to cover (default: the next month; a stolen gateway exposes them too)")
    issue.add_argument("--out", required=True, help="where to write the bundle (JSON)")
    issue.add_argument("--signing-key", help="the key service's signing seed file: bundles are signed with it")
    issue.set_defaults(func=_cmd_issue)
    pub = ks.add_parser("signing-public", help="print the public key gateways pin (privacy.key_service_public_key)")
    pub.add_argument("--root", required=True)
    pub.add_argument("--signing-key", required=True)
    pub.add_argument("--epoch", default="month", choices=[e.value for e in EpochPolicy])
    pub.set_defaults(func=_cmd_public)
    vh = ks.add_parser("verify-head", help="check the signed audit head in a gateway's status (JSON file)")
    vh.add_argument("--gateway-public", required=True)
    vh.add_argument("--gateway", required=True)
    vh.add_argument("status")
    vh.set_defaults(func=_cmd_verify_head)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m district.keyservice ...`."""
    parser = argparse.ArgumentParser(prog="district.keyservice")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keyservice", *(argv if argv is not None else sys.argv[1:])])
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
