"""Exact re-implementation of the resampler the MATLAB MTCNN uses (Piotr Dollar's ``imResample``, bilinear).

Per axis, ``imResampleMex`` shrinks by *area*: output sample ``o`` is the mean of the source over
``[o * L / n, (o + 1) * L / n)`` with fractional weights for the partly covered end pixels. It enlarges (or
keeps the size) by *bilinear* interpolation at half-pixel centres, clamped to the crop's first and last pixel.

We evaluate both in one batched gather per box type: an area axis samples the running sum (integral) of the
image along that axis at the two interval ends, which is piecewise linear and therefore exact under linear
interpolation; a bilinear axis samples the image itself. Pixels outside the image read as 0, which is the MATLAB
code's zero padding of crops that leave the image.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def _axis_samples(start: torch.Tensor, length: torch.Tensor, size: int, extent: int, shrink: bool):
    """Sample coordinates ``[N, corners, size]`` and weights ``[N, corners, size]`` along one axis.

    ``start`` is the 0-based index of the crop's first pixel and ``length`` its pixel count (float64, [N]).
    Area axes give two corners (interval end +, interval start -) in integral-image coordinates (edge ``i`` is
    index ``i``); bilinear axes give one corner in pixel-index coordinates."""
    steps = torch.arange(size, dtype=start.dtype, device=start.device)
    step = (length / size)[:, None]
    if shrink:
        low = (start[:, None] + steps * step).clamp(0, extent)
        high = (start[:, None] + (steps + 1) * step).clamp(0, extent)
        weight = 1 / step.expand(-1, size)
        return torch.stack([high, low], 1), torch.stack([weight, -weight], 1)
    centre = start[:, None] + (steps + 0.5) * step - 0.5
    centre = torch.minimum(torch.maximum(centre, start[:, None]), (start + length - 1)[:, None])
    # beyond one pixel outside the image everything is zero padding; keep coordinates in grid_sample's range
    return centre.clamp(-1, extent)[:, None], torch.ones_like(centre)[:, None]


def _normalised(coordinate: torch.Tensor, extent: int) -> torch.Tensor:
    # grid_sample with align_corners=True puts -1 and 1 on the first and last sample of the source tensor
    return coordinate * (2.0 / max(extent - 1, 1)) - 1


def resample_crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops of ``image`` ``[C, H, W]`` (float, 0..255) for ``boxes`` ``[N, 4]`` given as MATLAB 1-based
    inclusive integer pixel indices ``x1, y1, x2, y2``, zero-padded outside the image and resampled to
    ``[N, C, size, size]`` exactly as ``imResample(tmp, [size size], 'bilinear')``."""
    channels, height, width = image.shape
    out = image.new_zeros(len(boxes), channels, size, size)
    if len(boxes) == 0:
        return out
    source = image.double()
    boxes = boxes.double()
    start_x, start_y = boxes[:, 0] - 1, boxes[:, 1] - 1
    length_x, length_y = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    shrink_x, shrink_y = length_x > size, length_y > size
    for shrinks_x in (False, True):
        for shrinks_y in (False, True):
            chosen = torch.nonzero((shrink_x == shrinks_x) & (shrink_y == shrinks_y)).flatten()
            if chosen.numel() == 0:
                continue
            # running sums along the area axes, with a leading zero so index i is the sum of pixels < i
            table = source
            if shrinks_y:
                table = F.pad(table.cumsum(1), (0, 0, 1, 0))
            if shrinks_x:
                table = F.pad(table.cumsum(2), (1, 0))
            table_height, table_width = table.shape[1:]
            xs, x_weights = _axis_samples(start_x[chosen], length_x[chosen], size, width, shrinks_x)
            ys, y_weights = _axis_samples(start_y[chosen], length_y[chosen], size, height, shrinks_y)
            total = 0
            for cx in range(xs.shape[1]):
                for cy in range(ys.shape[1]):
                    grid_x = _normalised(xs[:, cx], table_width)[:, None, :].expand(-1, size, -1)
                    grid_y = _normalised(ys[:, cy], table_height)[:, :, None].expand(-1, -1, size)
                    grid = torch.stack([grid_x, grid_y], -1).reshape(1, -1, size, 2)
                    sampled = F.grid_sample(table[None], grid, mode="bilinear", padding_mode="zeros",
                                            align_corners=True)  # [1, C, n * size, size]
                    sampled = sampled.reshape(channels, -1, size, size).permute(1, 0, 2, 3)
                    weight = y_weights[:, cy][:, None, :, None] * x_weights[:, cx][:, None, None, :]
                    total = total + sampled * weight
            out[chosen] = total.to(out.dtype)
    return out


def resample_crops_cv2(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """`resample_crops` on the CPU with OpenCV, one crop at a time: ``image`` ``[H, W, C]`` float32, ``boxes``
    ``[N, 4]`` integer MATLAB 1-based inclusive; returns ``[N, size, size, C]`` float32.

    Each axis is resized on its own (x, then y), INTER_AREA when it shrinks (fractional box weights, as
    imResample) and INTER_LINEAR when it enlarges (half-pixel centres, clamped to the crop), so boxes that
    shrink along one axis and grow along the other are handled exactly too."""
    height, width, channels = image.shape
    out = np.empty((len(boxes), size, size, channels), np.float32)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    crop_width, crop_height = x2 - x1 + 1, y2 - y1 + 1
    left, top = np.maximum(x1 - 1, 0), np.maximum(y1 - 1, 0)
    right, bottom = np.minimum(x2, width), np.minimum(y2, height)
    inside = (left == x1 - 1) & (top == y1 - 1) & (right == x2) & (bottom == y2)
    mode_x = np.where(crop_width > size, cv2.INTER_AREA, cv2.INTER_LINEAR)
    mode_y = np.where(crop_height > size, cv2.INTER_AREA, cv2.INTER_LINEAR)
    # plain Python scalars: indexing numpy arrays element by element costs more than the resize of a small crop
    rows = zip(inside.tolist(), left.tolist(), top.tolist(), right.tolist(), bottom.tolist(), (x1 - 1).tolist(),
               (y1 - 1).tolist(), crop_width.tolist(), crop_height.tolist(), mode_x.tolist(), mode_y.tolist())
    for row, (is_inside, l, t, r, b, x0, y0, w, h, interpolation_x, interpolation_y) in enumerate(rows):
        if is_inside:
            crop = image[t:b, l:r]
        else:  # leaves the image: MATLAB's zero padding
            crop = np.zeros((h, w, channels), np.float32)
            if r > l and b > t:
                crop[t - y0:b - y0, l - x0:r - x0] = image[t:b, l:r]
        if interpolation_x == interpolation_y:
            cv2.resize(crop, (size, size), dst=out[row], interpolation=interpolation_x)
        else:
            crop = cv2.resize(crop, (size, h), interpolation=interpolation_x)
            cv2.resize(crop, (size, size), dst=out[row], interpolation=interpolation_y)
    return out


def shrink_area_from_integral(integral: np.ndarray, size: tuple[int, int], out: np.ndarray) -> np.ndarray:
    """Area-shrink a whole image to ``size`` (width, height) from its integral image (``cv2.integral``,
    ``[H + 1, W + 1, C]``), into ``out`` ``[height, width, C]`` float32; within 1e-3 (on 0-255 pixels) of
    ``cv2.resize(image, size, interpolation=cv2.INTER_AREA)``, whose float32 sums and dropped end weights under
    1e-3 account for the difference.

    The integral of a piecewise-constant image is bilinear inside each pixel, so its bilinear samples at the
    output cells' corners give the exact area sums with fractional edge weights. The cost grows with the output,
    not the source: a small pyramid level of a large frame costs a tiny fraction of a resize that reads every
    source pixel."""
    width, height = size
    source_height, source_width = integral.shape[0] - 1, integral.shape[1] - 1
    xs = np.arange(width + 1) * (source_width / width)
    ys = np.arange(height + 1) * (source_height / height)
    x0 = np.minimum(xs.astype(np.int64), source_width - 1)
    y0 = np.minimum(ys.astype(np.int64), source_height - 1)
    fx, fy = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    corners = [integral[np.ix_(rows, columns)].astype(np.float64) for rows in (y0, y0 + 1) for columns in (x0, x0 + 1)]
    top = corners[0] + fx * (corners[1] - corners[0])
    bottom = corners[2] + fx * (corners[3] - corners[2])
    sums = top + fy * (bottom - top)
    areas = sums[1:, 1:] - sums[1:, :-1] - sums[:-1, 1:] + sums[:-1, :-1]
    np.multiply(areas, (width / source_width) * (height / source_height), out=out, casting="same_kind")
    return out
