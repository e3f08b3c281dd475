"""The FarSee-Net section of ``keen demo``: a segmentation overlay on a street image, with the speed measured now.

The image is one CamVid validation frame shipped in ``keenvision/assets`` (``camvid_street.jpg``, 480x360, never
trained on; no public-domain street photo is installed with our dependencies; origin and the dataset's research-use
terms in NOTICE). Without the shipped weights (``farsee-camvid``) the section shows the speed of a random-weight
network only: an overlay of random weights would mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.bench import measure
from ..core.io import read_image, write_image
from ..core.report import Section
from .segment import CAMVID_CLASSES, Segmenter, colourise, overlay

CAMVID_SIZE_HW = (360, 480)


DEMO_IMAGE = Path(__file__).resolve().parents[1] / "assets" / "camvid_street.jpg"


def demo_image() -> tuple[np.ndarray | None, str]:
    """(RGB pixels or None, where they come from): the shipped CamVid validation frame."""
    if not DEMO_IMAGE.is_file():
        return None, f"the demo image {DEMO_IMAGE} is missing from this install"
    return read_image(DEMO_IMAGE).pixels, "CamVid val frame 0016E5_08039 (shipped in keenvision/assets)"


def demo_section(out_dir: Path, device: str | None = "cpu") -> Section:
    from .model import FarSeeNet, load_farsee

    out_dir = Path(out_dir)
    device = device or "cpu"
    section = Section("FarSee-Net real-time semantic segmentation")
    image, source = demo_image()
    try:
        model = load_farsee("farsee-camvid", device)
        trained = True
    except FileNotFoundError:
        torch.manual_seed(0)
        model = FarSeeNet(len(CAMVID_CLASSES))
        model.class_names = CAMVID_CLASSES
        trained = False
    segmenter = Segmenter(model=model, device=device, batch_size=1)
    pixels = image if image is not None else np.random.default_rng(0).integers(0, 256, (*CAMVID_SIZE_HW, 3), np.uint8)
    timing = measure(lambda: segmenter.segment(pixels), repeats=3, warmup=1, device=segmenter.device)
    config = model.config
    speed = (f"{timing.per_second:.1f} fps ({1000 * timing.median_s:.0f} ms per {pixels.shape[1]}x{pixels.shape[0]} "
             f"image, median of 3, batch 1, fp32, {segmenter.device}, {torch.get_num_threads()} threads, reading "
             "and colouring excluded)")
    section.paragraphs.append(
        f"Zhang & Zhang (ICRA 2020): {config['backbone']} features, a cascade of factorised ASPPs and feature-space "
        f"super-resolution (PixelShuffle) heads, run on the input sub-sampled x{config['input_scale']:g} and scored "
        f"at full resolution. Speed: {speed}.")
    if not trained:
        section.paragraphs.append(
            "The shipped weights (farsee-camvid) are not in this install yet, so no segmentation is shown: the speed "
            "above is of the same network with random weights (speed does not depend on the weights). Train them "
            "with `keen farsee train --config configs/farsee/camvid_mobilenet.yaml`.")
        return section
    if image is None:
        section.paragraphs.append(f"No overlay: {source}; the speed above is on a random image of CamVid's size.")
        return section
    result = segmenter.segment(image)
    write_image(out_dir / "farsee_overlay.png", overlay(image, result.labels, segmenter.palette))
    write_image(out_dir / "farsee_labels.png", colourise(result.labels, segmenter.palette))
    section.images.append(("farsee_overlay.png", f"{source}: image blended with the predicted class colours"))
    section.images.append(("farsee_labels.png", "predicted classes (CamVid colours)"))
    fractions = result.class_fractions(segmenter.class_names)
    colours = {name: segmenter.palette[i] for i, name in enumerate(segmenter.class_names)}
    section.table = (["class", "colour (RGB)", "share of the image"],
                     [[name, ", ".join(str(int(c)) for c in colours[name]), f"{share:.1%}"]
                      for name, share in fractions.items()])
    return section
