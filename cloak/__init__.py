"""FaceCloak: identity-specific face-privacy cloaks learned from a single selfie.

Pipeline (one sub-package per stage): faces -> views -> anchors -> optimise -> mask -> apply.
"""

__version__ = "0.1.0"
