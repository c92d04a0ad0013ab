"""`edgegw check --interactive`: "swipe a card now" on a real pseudo-terminal, the card shown masked."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from drivers.serial.rdm6300 import encode
from tests.conftest import ROOT, new_gateway

CARD = bytes.fromhex("0A1B2C3D4E")


def test_swipe_a_card_now_shows_it_masked(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        cfg = new_gateway(tmp_path, f'[[serial]]\nid = "reader1"\nport = "{os.ttyname(slave)}"\nformat = "rdm6300"\n')
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "check", "--config", str(cfg), "--interactive",
                                 "--only", "serial"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None

        def swipe_when_asked() -> None:
            for line in proc.stderr:  # type: ignore[union-attr]
                if "swipe a card at reader1 now" in line:
                    # Swipe until the check ends, as a person would if the first swipe went unseen.
                    while True:
                        time.sleep(0.5)
                        if proc.poll() is not None:
                            return
                        os.write(master, encode(CARD))

        t = threading.Thread(target=swipe_when_asked, daemon=True)
        t.start()
        # Not communicate(): it would read stderr too, racing the thread for the prompt.
        proc.wait(timeout=60)
        # The swiper must be done with the pty before the finally block closes it.
        t.join(timeout=5)
        assert proc.stdout is not None
        out = proc.stdout.read()
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, out
    line = next(ln for ln in out.splitlines() if "serial:reader1" in ln)
    assert line.startswith("ok") and "card •" in line
    decoded_full = [s for s in (CARD.hex().upper(), str(int.from_bytes(CARD, "big"))) if s in out]
    assert decoded_full == []  # never the whole identifier
