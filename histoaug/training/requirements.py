"""The training module's optional dependencies, checked with a message that says what to install.

scikit-learn (K-means, and the metrics of :mod:`histoaug.evaluation`) is in the ``training``
extra, not in histoaug's core dependencies, so a runtime-only install stays small; accelerate
(the training loop's engine) is a core dependency but checked the same way. Code that needs
them calls :func:`require` first.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from histoaug.errors import HistoaugError

INSTALL_HINT = "pip install 'histoaug[training]'"


class TrainingDependencyError(HistoaugError, ImportError):
    """A package of the ``training`` extra is not installed."""


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`TrainingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TrainingDependencyError(
            f"{purpose} needs the '{module.split('.')[0]}' package, which is not installed ({exc}); "
            f"install the training extra: {INSTALL_HINT}"
        ) from exc
