"""Evaluation of frozen backbones: the segmentation metric core and the dense linear probe."""
