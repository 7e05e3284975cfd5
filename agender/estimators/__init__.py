"""Age/gender estimators behind one tiny protocol and a registry by name.

An estimator takes a batch of padded BGR face crops cut from the full-resolution frame
(plus, when the detector gave them, 5-point landmarks in crop coordinates) and returns one
:class:`~agender.faces.Estimates` for the whole batch. Each class knows its own input spec
(size, mean, scale, channel order, alignment): nothing model-specific leaks into the analyzer.
"""
from __future__ import annotations

from agender.estimators.base import ESTIMATORS, Estimator, create_estimator, estimator_names

__all__ = ["ESTIMATORS", "Estimator", "create_estimator", "estimator_names"]
