"""The SICNN section of ``keen demo``: the astronaut's face reduced to 12x14 and brought back x8 by bicubic and by
SICNN, beside the real face.

The photo is scikit-image's astronaut (Eileen Collins, NASA, public domain; installed with scikit-image). MTCNN
finds the face, `hallucinate.align_face` aligns it to the 96x112 template (the real face, our reference), and
8x8 average pooling reduces it to 12x14. Without the shipped CNN-H (``sicnn-celeba``) the section says so and
shows bicubic only: random weights would show nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.io import write_image
from ..core.report import Section
from .hallucinate import DEFAULT_WEIGHTS, HR_SIZE_WH, Hallucinator, to_unit_tensor

DISPLAY_ZOOM = 2  # 96x112 is small on screen: the strip is shown at 2x (nearest, so no pixel is invented)


class _BicubicOnly(torch.nn.Module):
    """Stands in for CNN-H when the shipped weights are missing, so the detection and degradation still run; its
    output is never shown."""

    def forward(self, low_resolution: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(low_resolution, scale_factor=8, mode="bicubic").clamp(-1, 1)


def _strip(panels: list[np.ndarray]) -> np.ndarray:
    gap = np.full((HR_SIZE_WH[1], 4, 3), 255, np.uint8)
    pieces = []
    for panel in panels:
        pieces += [panel, gap]
    strip = np.concatenate(pieces[:-1], axis=1)
    return cv2.resize(strip, None, fx=DISPLAY_ZOOM, fy=DISPLAY_ZOOM, interpolation=cv2.INTER_NEAREST)


def demo_section(out_dir: Path, device: str | None = "cpu") -> Section:
    from skimage.data import astronaut

    from .evaluate import psnr_ssim

    out_dir = Path(out_dir)
    section = Section("SICNN face hallucination (x8, 12x14 -> 96x112)")
    try:
        hallucinator = Hallucinator(DEFAULT_WEIGHTS, device=device or "cpu")
        trained = True
    except FileNotFoundError:
        hallucinator = Hallucinator(model=_BicubicOnly(), device=device or "cpu")
        trained = False
    image = astronaut()
    start = time.perf_counter()
    faces = hallucinator.hallucinate_image(image, all_faces=True)
    elapsed = time.perf_counter() - start
    section.paragraphs.append(
        "Zhang et al. (ECCV 2018): CNN-H, a dense-block network with three stride-2 deconvolutions, trained with a "
        "pixel loss and the super-identity loss of a recognition network (CNN-R) that is itself retrained on the "
        "hallucinated faces (domain-integrated training). Here the astronaut's face (scikit-image, public domain) "
        "is aligned to the 96x112 template with MTCNN's 5 points, reduced to 12x14 by 8x8 averaging (the training "
        "degradation) and brought back x8.")
    if not trained:
        section.paragraphs.append(
            f"The shipped CNN-H ({DEFAULT_WEIGHTS}) is not in this install yet, so only bicubic is shown. Train it "
            "with `keen sicnn train --config configs/sicnn/<phase>.yaml` (recognition, pixel, then "
            "domain_integrated) and compare with `keen sicnn eval`.")
    if not faces:
        section.paragraphs.append("No face found: this is a regression; the astronaut photo has one clear face.")
        return section
    face = faces[0]
    lr_nearest = cv2.resize(face.lr, HR_SIZE_WH, interpolation=cv2.INTER_NEAREST)
    panels, names = [lr_nearest, face.bicubic], ["LR 12x14 (nearest x8)", "bicubic x8"]
    if trained:
        panels.append(face.sicnn)
        names.append("SICNN x8")
    panels.append(face.aligned)
    names.append("original (aligned 96x112)")
    write_image(out_dir / "sicnn_astronaut.png", _strip(panels))
    section.images.append(("sicnn_astronaut.png", " | ".join(names) + f", shown at {DISPLAY_ZOOM}x"))
    reference = to_unit_tensor([face.aligned])
    rows = []
    for name, output in (("bicubic", face.bicubic), ("SICNN", face.sicnn)):
        if name == "SICNN" and not trained:
            continue
        psnr, ssim = psnr_ssim(to_unit_tensor([output]), reference)
        rows.append([name, f"{float(psnr[0]):.2f}", f"{float(ssim[0]):.4f}"])
    section.table = (["method", "PSNR vs original (dB)", "SSIM"], rows)
    section.paragraphs.append(
        f"Detection, alignment and both up-samplings took {1000 * elapsed:.0f} ms on {hallucinator.device}. One "
        "face only: `keen sicnn eval` measures PSNR, SSIM and identity (dlib's recogniser) on held-out identities.")
    return section
