"""Stage 1: synthetic views of the enrolling person behind one interface."""

from .augment import AugmentConfig, AugmentViews
from .base import ViewGenerator, ViewRequest

__all__ = ["AugmentConfig", "AugmentViews", "ViewGenerator", "ViewRequest"]
