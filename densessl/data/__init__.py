"""Image sources, the synthetic scene benchmark and dataset readers."""

from .base import CorruptImageError, DataError, ImageSource
from .sources import (
    IMAGE_EXTENSIONS,
    CocoSource,
    FolderSource,
    SyntheticSource,
    decode_image,
    parse_source,
)
from .synthetic import (
    PRESETS,
    SynthConfig,
    SyntheticScenes,
    class_names,
    render_scene,
    scene_seed,
    voc_colormap,
    write_voc,
)
from .voc import VOC_CLASSES, VOCSegmentation, find_voc_root, read_label_png

__all__ = [
    "IMAGE_EXTENSIONS",
    "PRESETS",
    "VOC_CLASSES",
    "CocoSource",
    "CorruptImageError",
    "DataError",
    "FolderSource",
    "ImageSource",
    "SynthConfig",
    "SyntheticScenes",
    "SyntheticSource",
    "VOCSegmentation",
    "class_names",
    "decode_image",
    "find_voc_root",
    "parse_source",
    "read_label_png",
    "render_scene",
    "scene_seed",
    "voc_colormap",
    "write_voc",
]
