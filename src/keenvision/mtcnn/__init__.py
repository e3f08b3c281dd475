"""MTCNN face detection and 5-point alignment (Zhang et al., IEEE SPL 2016)."""

from .align import TEMPLATES, align, similarity_transform
from .detector import MTCNN, Face, pyramid_scales
from .model import ONet, PNet, RNet

__all__ = ["MTCNN", "Face", "PNet", "RNet", "ONet", "align", "similarity_transform", "TEMPLATES",
           "pyramid_scales"]
