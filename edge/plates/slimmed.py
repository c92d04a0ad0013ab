"""What the gateway knows about the slimmed PP-OCR recogniser, without importing onnx.

`edgegw models fetch` derives `ppocr_rec.edge.onnx` from the shipped PP-OCRv4 rec with the
`slim-plate-recogniser` fix (edge.plates.slim, which needs onnx): the same function, 1.5x faster a
call, its classifier cut to the blank and the plate characters. The derived file carries in its
metadata the classes it kept (`KEPT_KEY`, a JSON list: "<blank>" then one plate character each) and
the recipe it was made with (`RECIPE_KEY`). The reader only loads that file and reads those keys
through ONNX Runtime, so the capture daemon never imports onnx (16 MB resident, docs/gate.md).

The recipe names the rewrite's version and the plate alphabet the classes were chosen from, so a
file made by another version of the code is re-derived by `fetch` (its state records the recipe)
and not used by the reader (which then runs the shipped file, restricting its output as before).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from edge.plates.grammar import PLATE_CHARS

FIX = "slim-plate-recogniser"
KEPT_KEY = "edgegw.kept_classes"
RECIPE_KEY = "edgegw.slim_recipe"
# Bump when edge.plates.slim's rewrites change what the derived graph computes or how fast.
SLIM_VERSION = 1


def recipe() -> str:
    """This code's slimming recipe: the rewrite version and a digest of the plate alphabet kept."""
    digest = hashlib.sha256(PLATE_CHARS.encode("utf-8")).hexdigest()[:16]
    return f"{SLIM_VERSION}: conv-affine, affine-pointwise, hardswish, classes of plate alphabet {digest}"


def encode_classes(classes: Sequence[str]) -> str:
    """The kept class list as stored in the derived file's metadata."""
    return json.dumps(list(classes), ensure_ascii=False)


def kept_classes(metadata: Mapping[str, str]) -> list[str] | None:
    """The class list of a slimmed recogniser made by this recipe, from its metadata; None when the
    file was not slimmed, or slimmed by another recipe (then it must not be trusted)."""
    if metadata.get(RECIPE_KEY) != recipe():
        return None
    try:
        classes = json.loads(metadata.get(KEPT_KEY, ""))
    except ValueError:
        return None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return None
    return classes
