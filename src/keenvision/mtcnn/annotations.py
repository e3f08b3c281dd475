"""dlib's imglab XML annotations (boxes and 68 iBUG points), read once for training and evaluation."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np


def read_imglab(path: str | Path) -> dict[str, list[dict]]:
    """dlib imglab XML: per image file, its boxes as ``{"box": [x1, y1, x2, y2] pixel-edge, "ignore": bool,
    "parts": [68, 2] or None}``. dlib's rectangle spans pixels ``left .. left + width - 1``; a part at integer
    ``(x, y)`` is that pixel's centre, ``(x + 0.5, y + 0.5)`` in edge coordinates."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib imglab file not found: {path}")
    out: dict[str, list[dict]] = {}
    for image in ET.parse(path).getroot().iter("image"):
        faces = out.setdefault(image.attrib["file"], [])
        for box in image.iter("box"):
            left, top = float(box.attrib["left"]), float(box.attrib["top"])
            width, height = float(box.attrib["width"]), float(box.attrib["height"])
            parts = sorted((int(p.attrib["name"]), float(p.attrib["x"]), float(p.attrib["y"]))
                            for p in box.iter("part"))
            faces.append({"box": np.array([left, top, left + width, top + height]),
                          "ignore": box.attrib.get("ignore", "0") == "1",
                          "parts": np.array([[x, y] for _, x, y in parts]) + 0.5 if parts else None})
    return out


def five_points_from_ibug(parts: np.ndarray) -> np.ndarray:
    """MTCNN's five points from the 68 iBUG points: eye centres (mean of 36-41, image-left, and 42-47), nose
    tip 30, mouth corners 48 and 54."""
    parts = np.asarray(parts, np.float64)
    return np.stack([parts[36:42].mean(0), parts[42:48].mean(0), parts[30], parts[48], parts[54]])
