"""Estimator protocol and registry (name → class, imported lazily)."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np


if TYPE_CHECKING:
    from agender.faces import Estimates
    from agender.models import ModelStore


@runtime_checkable
class Estimator(Protocol):
    """Scores a batch of face crops."""

    name: str
    device_used: str
    default_padding: float  # box padding (fraction of box size per side) the model was trained with
    wants_landmarks: bool  # True when the estimator aligns faces from 5-point landmarks
    #: The files it reads (the sidecar lists them with their sha256): package weights and
    #: cached conversions included, not only what the model store resolved.
    model_files: Sequence[Path]

    def estimate(
        self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None
    ) -> "Estimates":
        """One batch: ``crops`` are BGR uint8 images; ``landmarks[i]`` is (5, 2) in crop pixels
        (YuNet order: right eye, left eye, nose tip, right mouth corner, left mouth corner) or None."""
        ...


class SplitGender:
    """Base class of an estimator whose P(male) costs a second net (agender:g150's 150-px
    gender net): ``estimate(crops, landmarks, gender=mask)`` runs that net only where ``mask``
    is true and returns a cheaper P(male) elsewhere (the age net's own head's), which the
    tracker shows in the row but does not fold into the track's gender. The tracking stage
    asks for a track's gender only now and then (a person's gender does not change within a
    track; see
    :meth:`agender.tracking.Tracker.plan_gender`); the age is still measured on every estimate.
    Estimators whose gender is free ignore the question, so they are not SplitGender."""

    def estimate(self, crops: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None] | None = None,
                 gender: np.ndarray | None = None) -> "Estimates":
        raise NotImplementedError


ESTIMATORS = MappingProxyType(
    {
        "cydral": "agender.estimators.cydral:CydralEstimator",
        "ssrnet": "agender.estimators.ssrnet:SSRNetEstimator",
        "levi-hassner": "agender.estimators.levi_hassner:LeviHassnerEstimator",
        # our own nets (agender.train, agender.train.gender_net), shipped as package data
        "agender": "agender.estimators.agender_net:AgenderEstimator",
    }
)
# What "auto" (the default everywhere) means: our own nets (shipped as package data; model
# card age_gender_net/agender.md): the int8 age net (after it agreed with the float net on
# this CPU) + the 150-px gender net (float: its int8 copy fails the same check), which gives
# P(male) and a second age view mixed with the age net's. faces-dev: MAE 5.40 vs Cydral's 7.43,
# gender 93.6 vs 89.2 %; in video the gender net runs
# only on a few of a track's estimates, so the pipeline is as fast as with cydral:int8.
# The weights inherit UTKFace's non-commercial terms: commercial users pick "cydral:int8"
# (CC0, the previous default) or "cydral" (the float original).
DEFAULT_ESTIMATOR = "agender:g150"


# name -> (variants to show, hidden aliases). "cydral" alone is the float nets (= fp32 = v1).
ESTIMATOR_VARIANTS = MappingProxyType(
    {"cydral": (("int8", "fp32"), ("v1",)), "ssrnet": (("wiki", "imdb", "morph"), ("morph2",)),
     "levi-hassner": ((), ()), "agender": (("g150", "int8", "fp32"), ("v1",))}
)


def estimator_names() -> list[str]:
    return list(ESTIMATORS)


def estimator_specs() -> list[str]:
    """Every valid ``--estimator`` value but ``auto``: ``cydral:int8``, ``ssrnet:morph``, ..."""
    return [s for n in ESTIMATORS for s in (n, *(f"{n}:{v}" for v in ESTIMATOR_VARIANTS.get(n, ((), ()))[0]))]


def check_estimator(spec: str) -> str:
    """``spec`` normalised, or an AgenderError listing every valid estimator (one line)."""
    from agender.detectors.base import check_spec

    return check_spec("estimator", spec, ESTIMATORS, ESTIMATOR_VARIANTS, extra=("auto", "default", ""))


def create_estimator(
    spec: "str | Estimator", *, models: "ModelStore | None" = None, device: str = "auto",
    runtime: str = "onnxruntime", threads: int | None = None,
) -> "Estimator":
    """Build an estimator from ``"name"`` or ``"name:variant"`` (e.g. ``"ssrnet:imdb"``)."""
    if not isinstance(spec, str):
        return spec
    from agender.models import ModelStore

    name, _, variant = spec.strip().lower().partition(":")
    if name in ("", "auto", "default"):
        name, _, variant = DEFAULT_ESTIMATOR.partition(":")
    check_estimator(spec)
    module, _, cls = ESTIMATORS[name].partition(":")
    klass: Any = getattr(importlib.import_module(module), cls)
    kwargs: dict[str, Any] = {"models": models or ModelStore(), "device": device}
    if variant:
        kwargs["variant"] = variant
    from agender.runtimes import runtime_kwargs

    kwargs.update(runtime_kwargs(klass, f"estimator {name}", runtime, threads))
    return klass(**kwargs)
