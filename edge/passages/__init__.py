"""Passage fusion and the local encrypted passage store (with retention and crypto-shredding)."""

from edge.passages.config import PassageConfig, RetentionConfig
from edge.passages.fusion import PassageFusion
from edge.passages.store import DataClass, PassageStore, PurgeReport, StoredRecord, StoreError

__all__ = ["DataClass", "PassageConfig", "PassageFusion", "PassageStore", "PurgeReport", "RetentionConfig",
           "StoreError", "StoredRecord"]
