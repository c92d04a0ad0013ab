"""The metric families every daemon shares, and a registry per process.

Names follow Prometheus conventions: `edgegw_` prefix, base units (seconds, pixels, bytes),
`_total` on counters. Labels carry only configured names (camera ids, port ids, model names,
event kinds, reasons): never a plate, card, MAC, pseudonym or any other identifier.
Gauges that mirror state a daemon already keeps (camera fps, outbox depth) are read at scrape
time by a collector callback, so the hot path pays nothing for them.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge import __version__

log = logging.getLogger(__name__)

# Inference on a Pi is 5 ms..1 s per call; buckets spread over that range.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# Face widths: fail < 40 px, warn < 80 px (the aiming gauge); buckets around those thresholds.
FACE_WIDTH_BUCKETS = (20, 30, 40, 50, 60, 80, 100, 130, 170, 220, 300, 400)
# Plate character heights: fail < 15 px, warn < 20 px.
PLATE_CHAR_BUCKETS = (8, 10, 12, 15, 18, 20, 25, 30, 40, 55, 75)


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a scrape-time metric family."""

    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family produced at scrape time: gauge or counter, its label names and samples."""

    name: str
    doc: str
    kind: str  # "gauge" or "counter"
    label_names: tuple[str, ...]
    samples: Sequence[Sample]


class _CallbackCollector(Collector):
    """Turns a callback's families into Prometheus metrics at every scrape."""

    def __init__(self, callback: Callable[[], Iterable[Family]]) -> None:
        self._callback = callback

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._callback())
        except Exception:  # a broken status read must not take the whole exposition down
            log.exception("metrics collector failed")
            return
        for fam in families:
            metric: GaugeMetricFamily | CounterMetricFamily
            if fam.kind == "counter":
                name = fam.name.removesuffix("_total")
                metric = CounterMetricFamily(name, fam.doc, labels=list(fam.label_names))
            else:
                metric = GaugeMetricFamily(fam.name, fam.doc, labels=list(fam.label_names))
            for s in fam.samples:
                metric.add_metric(list(s.labels), s.value)
            yield metric


class Telemetry:
    """A process's registry: build info, the histograms the hot path observes, scrape-time families."""

    def __init__(self, daemon: str) -> None:
        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=True)
        info = Info("edgegw_build", "Version and runtime of this daemon", registry=self.registry)
        info.info({"version": __version__, "daemon": daemon, "python": platform.python_version()})
        self.inference_seconds = Histogram(
            "edgegw_inference_seconds", "Wall time of one model call", ["model"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.frame_seconds = Histogram(
            "edgegw_frame_processing_seconds", "Wall time of one frame through its camera's path", ["camera"],
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.face_width_px = Histogram(
            "edgegw_face_width_pixels", "Width of each detected face (aim drift over the years)", ["camera"],
            buckets=FACE_WIDTH_BUCKETS, registry=self.registry)
        self.plate_char_px = Histogram(
            "edgegw_plate_char_height_pixels", "Estimated character height of each detected plate", ["camera"],
            buckets=PLATE_CHAR_BUCKETS, registry=self.registry)

    def add_families(self, callback: Callable[[], Iterable[Family]]) -> None:
        """Register a callback that yields scrape-time families (state the daemon already keeps)."""
        self.registry.register(_CallbackCollector(callback))


def gauge(name: str, doc: str, label_names: tuple[str, ...],
          samples: Iterable[tuple[tuple[str, ...], float]]) -> Family:
    """A gauge family from (labels, value) pairs."""
    return Family(name, doc, "gauge", label_names, [Sample(lbl, float(v)) for lbl, v in samples])


def counter(name: str, doc: str, label_names: tuple[str, ...],
            samples: Iterable[tuple[tuple[str, ...], float]]) -> Family:
    """A counter family (name ends in `_total`) from (labels, value) pairs."""
    return Family(name, doc, "counter", label_names, [Sample(lbl, float(v)) for lbl, v in samples])
