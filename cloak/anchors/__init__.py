"""Stage 2a: anchor identities (G+ nearest, G- farthest) from a gallery that never contains the user."""

from .gallery import AnchorGallery, build_gallery, default_gallery, list_images
from .select import Anchors, select_anchors

__all__ = ["AnchorGallery", "Anchors", "build_gallery", "default_gallery", "list_images", "select_anchors"]
