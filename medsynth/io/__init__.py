"""Image I/O with exact geometry, and case discovery."""

from medsynth.io.cases import case_id, list_images
from medsynth.io.image import ImageMeta, Volume, read_image, write_ct, write_image, write_labels
from medsynth.io.inputs import resolve_inputs

__all__ = [
    "ImageMeta",
    "Volume",
    "case_id",
    "list_images",
    "read_image",
    "resolve_inputs",
    "write_ct",
    "write_image",
    "write_labels",
]
