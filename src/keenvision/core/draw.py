"""Drawing detections on RGB uint8 images."""

from __future__ import annotations

import cv2
import numpy as np

_LANDMARK_COLOURS = [(255, 64, 64), (64, 255, 64), (64, 64, 255), (255, 255, 0), (0, 255, 255)]


def draw_boxes(image: np.ndarray, boxes, scores=None, landmarks=None, colour=(0, 220, 0)) -> np.ndarray:
    """A copy of ``image`` with ``boxes`` [N, 4] (x1, y1, x2, y2, pixel-edge coordinates), optional scores and
    optional 5-point landmarks [N, 5, 2] drawn on it; line width scales with the image."""
    canvas = np.ascontiguousarray(image).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for index, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, thickness, cv2.LINE_AA)
        if scores is not None:
            cv2.putText(canvas, f"{float(scores[index]):.2f}", (x1, max(y1 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thickness, colour, thickness, cv2.LINE_AA)
        if landmarks is not None:
            for point, point_colour in zip(np.asarray(landmarks[index]).reshape(-1, 2), _LANDMARK_COLOURS):
                centre = (int(round(point[0] - 0.5)), int(round(point[1] - 0.5)))  # edge -> pixel-centre
                cv2.circle(canvas, centre, thickness + 1, point_colour, -1, cv2.LINE_AA)
    return canvas
