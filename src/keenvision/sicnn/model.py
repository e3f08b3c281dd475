"""SICNN (Zhang et al., ECCV 2018): the hallucination network CNN-H, the recognition network CNN-R and the margin
heads CNN-R is trained with (A-Softmax as in the paper; CosFace and ArcFace selectable).

Faces are RGB in [-1, 1] (``x / 127.5 - 1``, see `keenvision.sicnn.data.normalise`), 96 wide and 112 high; the
low-resolution input of CNN-H is the 8x8 average pooling of that (`keenvision.sicnn.data.degrade`), 12x14.

CNN-H (layout of the public Caffe sample ``sicnn_caffe/sicnn.prototxt``; docs/sicnn.md), default widths smaller
so it trains on a CPU (``PAPER_CNN_H`` holds the sample's)::

    LR [B,3,14,12] -> stage 1: conv3 (stem) + dense layers (conv3 growth, PReLU, concatenated)
                   -> deconv3 stride 2 + PReLU                                    [B,up,28,24]
                   -> stage 2: 1x1 to stem, dense layers -> deconv5 stride 2     [B,up,56,48]
                   -> stage 3: 1x1 to stem, dense layers -> deconv5 stride 2     [B,up,112,96]
                   -> stage 4: 1x1 to stem, dense layers -> conv5 to 3, tanh     [B,3,112,96]

CNN-R (the sample's 28-layer residual net, center-loss style: unpadded 3x3 transitions, 2x2 max pooling, residual
blocks of two padded 3x3 conv + PReLU; ``PAPER_CNN_R``) -> FC5, the embedding the super-identity loss compares.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.registry import shipped_files
from ..core.weights import ResolvedWeights, WeightsError, load_into, open_weights, save_weights

SHIPPED = shipped_files("sicnn")  # CNN-H "sicnn-celeba", CNN-R "sicnn-cnn-r-celeba3200" (weights/registry.json)
EXPORT_FORMAT = "keenvision.sicnn"
FACE_SIZE = (96, 112)  # (width, height) of the aligned faces, the SphereFace/CosFace 5-point template
SCALE = 8  # CNN-H magnification: 12x14 -> 96x112

# The Caffe sample's sizes (docs/sicnn.md): ~4.7 M parameters for CNN-H, ~28 layers for CNN-R.
PAPER_CNN_H = {"stem_channels": 64, "growth": 32, "dense_layers": [6, 6, 6, 2], "upsample_channels": 256}
PAPER_CNN_R = {"channels": [64, 128, 256, 512], "blocks": [1, 2, 5, 3], "stem_channels": 32, "embedding_dim": 512,
               "batch_norm": False}


class DenseLayers(nn.Module):
    """``count`` layers of conv3 (``growth`` channels) + PReLU, each fed the concatenation of the input and all
    earlier outputs (the ``preconvN_k`` / ``concatN_k`` chains of the Caffe sample).

    ``[B, C, H, W] -> [B, C + count * growth, H, W]``
    """

    def __init__(self, in_channels: int, growth: int, count: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels + index * growth, growth, 3, padding=1), nn.PReLU(growth))
            for index in range(count))
        self.out_channels = in_channels + count * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return x


class HallucinationNet(nn.Module):
    """CNN-H: ``[B, 3, 14, 12]`` LR faces in [-1, 1] -> ``[B, 3, 112, 96]`` hallucinated faces in (-1, 1) (tanh).

    Any input size works; the output is exactly 8x (three stride-2 deconvolutions whose ``output_padding=1`` is the
    sample's ``shape_offset: 1``).

    Args:
        stem_channels: width of stage 1's first conv and of the 1x1 convs opening stages 2-4 (sample: 64).
        growth: channels each dense layer adds (sample: 32).
        dense_layers: dense layers in stages 1-4 (sample: 6, 6, 6, 2).
        upsample_channels: channels of the three deconvolutions (sample: 256).
        bicubic_residual: not in the paper (off by default): the network adds a residual to the bicubic upscaling
            of its input instead of drawing the face from scratch (VDSR's global residual), its last conv starts at
            zero so training starts at bicubic, and the output is clamped to [-1, 1] instead of tanh.
    """

    def __init__(self, stem_channels: int = 32, growth: int = 16, dense_layers: Sequence[int] = (4, 4, 4, 2),
                 upsample_channels: int = 64, bicubic_residual: bool = False):
        super().__init__()
        if len(dense_layers) != 4:
            raise ValueError(f"dense_layers needs a count for each of the 4 stages, got {list(dense_layers)}")
        self.config = {"stem_channels": int(stem_channels), "growth": int(growth),
                       "dense_layers": [int(n) for n in dense_layers], "upsample_channels": int(upsample_channels)}
        self.bicubic_residual = bool(bicubic_residual)
        if self.bicubic_residual:  # written only when set, so earlier exports keep their metadata
            self.config["bicubic_residual"] = True
        stages, upsamplers = [], []
        for stage, count in enumerate(dense_layers):
            # stage 1 sees the image (conv3), the later ones the previous deconvolution (1x1 bottleneck)
            entry = (nn.Conv2d(3, stem_channels, 3, padding=1) if stage == 0
                     else nn.Conv2d(upsample_channels, stem_channels, 1))
            dense = DenseLayers(stem_channels, growth, count)
            stages.append(nn.Sequential(entry, nn.PReLU(stem_channels), dense))
            if stage < 3:
                kernel = 3 if stage == 0 else 5  # deconv1 is 3x3, deconv2/3 are 5x5 in the sample
                upsamplers.append(nn.Sequential(
                    nn.ConvTranspose2d(dense.out_channels, upsample_channels, kernel, stride=2,
                                       padding=kernel // 2, output_padding=1), nn.PReLU(upsample_channels)))
        self.stages, self.upsamplers = nn.ModuleList(stages), nn.ModuleList(upsamplers)
        self.to_image = nn.Conv2d(stages[-1][-1].out_channels, 3, 5, padding=2)
        # PReLUs are per channel (Caffe's default); the sample's fillers: xavier weights, zero biases
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.bicubic_residual:
            nn.init.zeros_(self.to_image.weight)

    def forward(self, low_resolution: torch.Tensor) -> torch.Tensor:
        """``[B, 3, h, w]`` in [-1, 1] -> ``[B, 3, 8h, 8w]`` in (-1, 1)."""
        x = low_resolution
        for stage, upsample in zip(self.stages, self.upsamplers):
            x = upsample(stage(x))
        image = self.to_image(self.stages[-1](x))
        if not self.bicubic_residual:
            return torch.tanh(image)
        bicubic = F.interpolate(low_resolution, size=image.shape[-2:], mode="bicubic", align_corners=False)
        return (bicubic + image).clamp(-1, 1)


class ResidualBlock(nn.Module):
    """Two padded conv3 + PReLU (optionally BatchNorm after each conv) and an identity shortcut.
    ``[B, C, H, W] -> [B, C, H, W]``"""

    def __init__(self, channels: int, batch_norm: bool):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            conv = nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm)
            nn.init.normal_(conv.weight, std=0.01)  # the sample's gaussian(0.01) filler for residual convs
            layers += [conv, nn.BatchNorm2d(channels)] if batch_norm else [conv]
            layers.append(nn.PReLU(channels))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _transition(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    """Unpadded conv3 (+BN) + PReLU, as the sample's conv1a/conv1b/conv2/conv3/conv4."""
    conv = nn.Conv2d(in_channels, out_channels, 3, bias=not batch_norm)
    nn.init.xavier_uniform_(conv.weight)
    return [conv, nn.BatchNorm2d(out_channels), nn.PReLU(out_channels)] if batch_norm else [conv,
                                                                                           nn.PReLU(out_channels)]


class RecognitionNet(nn.Module):
    """CNN-R: ``[B, 3, 112, 96]`` faces in [-1, 1] -> ``[B, embedding_dim]`` FC5 features (unnormalised).

    Layout (the Caffe sample, center-loss style)::

        conv3 (stem/unpadded) -> conv3 (channels[0], unpadded) -> maxpool2 -> blocks[0] residual blocks
        for each later stage i: conv3 (channels[i], unpadded) -> maxpool2 -> blocks[i] residual blocks
        -> flatten -> FC5 (embedding_dim)

    112x96 -> 110x94 -> 108x92 -> 54x46 -> 52x44 -> 26x22 -> 24x20 -> 12x10 -> 10x8 -> 5x4 with four stages.
    The default is a CPU-sized net ([1, 2, 2, 1] blocks at 32/64/128/256); ``PAPER_CNN_R`` is the sample's
    28-layer one ([1, 2, 5, 3] at 64/128/256/512). ``batch_norm`` (not in the sample, which has none) makes
    training from scratch on small data far easier; off by default.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), blocks: Sequence[int] = (1, 2, 2, 1),
                 stem_channels: int = 16, embedding_dim: int = 512, batch_norm: bool = False,
                 input_size: Sequence[int] = (112, 96)):
        super().__init__()
        if len(channels) != len(blocks) or not channels:
            raise ValueError(f"channels and blocks need one entry per stage, got {list(channels)}, {list(blocks)}")
        self.config = {"channels": [int(c) for c in channels], "blocks": [int(b) for b in blocks],
                       "stem_channels": int(stem_channels), "embedding_dim": int(embedding_dim),
                       "batch_norm": bool(batch_norm), "input_size": [int(s) for s in input_size]}
        layers = _transition(3, stem_channels, batch_norm)
        height, width = input_size[0] - 2, input_size[1] - 2
        previous = stem_channels
        for width_out, count in zip(channels, blocks):
            layers += _transition(previous, width_out, batch_norm) + [nn.MaxPool2d(2, 2)]
            height, width = (height - 2) // 2, (width - 2) // 2
            layers += [ResidualBlock(width_out, batch_norm) for _ in range(count)]
            previous = width_out
        if height < 1 or width < 1:
            raise ValueError(f"input {list(input_size)} is too small for {len(channels)} stages")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (previous, height, width)
        self.fc5 = nn.Linear(previous * height * width, embedding_dim)
        nn.init.xavier_uniform_(self.fc5.weight)
        nn.init.zeros_(self.fc5.bias)

    @property
    def embedding_dim(self) -> int:
        return self.fc5.out_features

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 112, 96]`` in [-1, 1] -> FC5 ``[B, embedding_dim]``, not normalised (losses normalise)."""
        return self.fc5(self.features(faces).flatten(1))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.embed(faces)


def _chebyshev_cos_multiple(cosine: torch.Tensor, margin: int) -> torch.Tensor:
    """cos(m * theta) from cos(theta) by the Chebyshev recurrence T_{n+1} = 2c T_n - T_{n-1} (SphereFace: avoids
    the unbounded gradient of acos at +-1)."""
    previous, current = torch.ones_like(cosine), cosine
    if margin == 0:
        return previous
    for _ in range(margin - 1):
        previous, current = current, 2 * cosine * current - previous
    return current


class SphereFaceHead(nn.Module):
    """A-Softmax (SphereFace, Liu et al. 2017) classification layer with its lambda annealing, as CNN-R's L_FR.

    With W_j unit-norm, theta_j the angle between x and W_j, and y the label, the logits are
    ``|x| cos theta_j`` for j != y and, for the target,
    ``|x| (lambda cos theta_y + psi(theta_y)) / (1 + lambda)``,
    ``psi(theta) = (-1)^k cos(m theta) - 2k`` for ``theta in [k pi/m, (k+1) pi/m]``;
    ``lambda = max(lambda_min, base (1 + gamma * iteration)^(-power))`` decreases over training (SphereFace's
    Caffe ``MarginInnerProduct``: base 1000, gamma 0.12, power 1, lambda_min 5; the SICNN sample fixes lambda at
    12 with base = lambda_min = 12). ``iteration`` counts training forwards with labels; it is a buffer, so it
    lives in checkpoints.

    ``forward(x [B, D], labels [B]) -> [B, K]`` margin logits; without labels, the plain ``|x| cos theta``.
    """

    def __init__(self, embedding_dim: int, num_classes: int, margin: int = 4, lambda_base: float = 1000.0,
                 lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 5.0):
        super().__init__()
        if int(margin) != margin or margin < 1:
            raise ValueError(f"A-Softmax needs an integer margin >= 1, got {margin}")
        self.margin = int(margin)
        self.lambda_base, self.lambda_gamma = float(lambda_base), float(lambda_gamma)
        self.lambda_power, self.lambda_min = float(lambda_power), float(lambda_min)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        annealed = self.lambda_base * (1 + self.lambda_gamma * int(self.iteration)) ** -self.lambda_power
        return max(self.lambda_min, annealed)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        norms = embeddings.norm(dim=1, keepdim=True)
        cosine = (F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T).clamp(-1, 1)
        logits = norms * cosine
        if labels is None:
            return logits
        cos_target = cosine.gather(1, labels[:, None])
        with torch.no_grad():  # k is piecewise constant: no gradient
            k = torch.floor(self.margin * torch.acos(cos_target) / math.pi)
        psi = (1 - 2 * torch.remainder(k, 2)) * _chebyshev_cos_multiple(cos_target, self.margin) - 2 * k
        lambda_ = self.current_lambda()
        if self.training:
            self.iteration += 1
        target = norms * (lambda_ * cos_target + psi) / (1 + lambda_)
        return logits.scatter(1, labels[:, None], target)


class _CosineMarginHead(nn.Module):
    """Class weights compared by cosine with the embeddings, scaled by ``s``; subclasses set the target's margin."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float, margin: float):
        super().__init__()
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T


class CosFaceHead(_CosineMarginHead):
    """CosFace / large-margin cosine loss (Wang et al. 2018): logits ``s cos theta_j``, target ``s (cos theta_y -
    m)``. ``forward(x [B, D], labels [B] | None) -> [B, K]``."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.35):
        super().__init__(embedding_dim, num_classes, scale, margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if labels is not None:
            cosine = cosine.scatter(1, labels[:, None], cosine.gather(1, labels[:, None]) - self.margin)
        return self.scale * cosine


class ArcFaceHead(_CosineMarginHead):
    """ArcFace / additive angular margin (Deng et al. 2019): logits ``s cos theta_j``, target
    ``s cos(theta_y + m)``; where ``theta_y + m > pi`` (cos(theta + m) would rise again) the target is
    ``s (cos theta_y - m sin m)`` as in InsightFace. ``forward(x [B, D], labels [B] | None) -> [B, K]``."""

    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__(embedding_dim, num_classes, scale, margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings)
        if labels is not None:
            cos_target = cosine.gather(1, labels[:, None]).clamp(-1, 1)
            sin_target = torch.sqrt((1 - cos_target ** 2).clamp_min(1e-12))
            shifted = cos_target * math.cos(self.margin) - sin_target * math.sin(self.margin)
            fallback = cos_target - self.margin * math.sin(self.margin)
            target = torch.where(cos_target > math.cos(math.pi - self.margin), shifted, fallback)
            cosine = cosine.scatter(1, labels[:, None], target)
        return self.scale * cosine


MARGIN_HEADS = {"sphereface": SphereFaceHead, "cosface": CosFaceHead, "arcface": ArcFaceHead}


def build_margin_head(kind: str, embedding_dim: int, num_classes: int, **options) -> nn.Module:
    """``kind`` one of ``sphereface`` (A-Softmax, the paper's), ``cosface``, ``arcface``; ``options`` go to the
    head (e.g. ``margin``, ``scale``, ``lambda_min``)."""
    if kind not in MARGIN_HEADS:
        raise ValueError(f"margin head must be one of {sorted(MARGIN_HEADS)}, got {kind!r}")
    try:
        return MARGIN_HEADS[kind](embedding_dim, num_classes, **options)
    except TypeError as error:
        raise ValueError(f"bad options for the {kind} head: {error}") from None


# ------------------------------------------------------------------------------------------------------------------
# exports: fp16 safetensors whose metadata holds what is needed to rebuild the network


def export_metadata(network: str, model: nn.Module, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Metadata of an export: format, which network (``cnn_h`` / ``cnn_r``), architecture (JSON), the input
    normalisation; plus ``extra`` strings (e.g. global_step, val_psnr, head)."""
    return {"format": EXPORT_FORMAT, "network": network, "architecture": json.dumps(model.config),
            "normalisation": "x / 127.5 - 1 (RGB, [-1, 1])", "degradation": "8x8 average pooling of 96x112",
            **(extra or {})}


def open_export(name_or_path: str | Path, network: str | None = None) -> ResolvedWeights:
    """A SICNN export (a shipped name or a ``.safetensors`` path) through the one resolver (`open_weights`:
    checksum, format, architecture); with ``network`` (``cnn_h`` / ``cnn_r``) it must hold that network. One-line
    errors for a missing, unreadable or foreign file."""
    weights = open_weights(name_or_path, "sicnn", "SICNN", "configs/sicnn/*.yaml", format=EXPORT_FORMAT,
                           required=("architecture",))
    if network is not None and weights.metadata.get("network") != network:
        raise WeightsError(f"{weights.path} holds {weights.metadata.get('network')!r}, not "
                           f"{network.upper().replace('_', '-')}")
    return weights


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a SICNN export (a path or a shipped name), checked by `open_export`."""
    return open_export(path).metadata


def load_cnn_h(name_or_path: str | Path = "sicnn-celeba", device: str | torch.device = "cpu") -> HallucinationNet:
    """CNN-H in eval mode from ``"sicnn-celeba"`` (shipped weights) or a ``.safetensors`` export of
    `keenvision.sicnn.train` (its metadata holds the architecture)."""
    weights = open_export(name_or_path, "cnn_h")
    model = HallucinationNet(**json.loads(weights.metadata["architecture"]))
    load_into(model, weights.state(), str(weights.path))
    return model.to(device).eval()


def build_cnn_r(config: dict) -> nn.Module:
    """A CNN-R from its architecture dict: ``kind: mobileface`` is `mobileface.MobileFaceNet` (the imported
    recogniser), anything else `RecognitionNet`. Both have ``embed``, ``embedding_dim`` and ``config``."""
    config = dict(config)
    if config.pop("kind", "sicnn") == "mobileface":
        from .mobileface import MobileFaceNet

        return MobileFaceNet(**config)
    return RecognitionNet(**config)


def load_cnn_r(path: str | Path, device: str | torch.device = "cpu",
               with_head: bool = False) -> nn.Module | tuple[nn.Module, nn.Module]:
    """CNN-R in eval mode from a ``.safetensors`` export of `keenvision.sicnn.train` or of
    `keenvision.sicnn.import_recogniser`; with ``with_head``, also its margin head (``head.*`` tensors; kind and
    options in the ``head`` metadata)."""
    weights = open_export(path, "cnn_r")
    path, metadata, state = weights.path, weights.metadata, weights.state()
    model = build_cnn_r(json.loads(metadata["architecture"]))
    load_into(model, {k: v for k, v in state.items() if not k.startswith("head.")}, str(path))
    model = model.to(device).eval()
    if not with_head:
        return model
    if "head" not in metadata:
        raise WeightsError(f"{path} has no margin head")
    head_config = json.loads(metadata["head"])
    head = build_margin_head(head_config["kind"], model.embedding_dim, head_config["num_classes"],
                             **head_config.get("options", {}))
    load_into(head, {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}, f"{path} (head)")
    return model, head.to(device).eval()


def import_recogniser(params: str | Path, out: str | Path, symbol: str | Path | None = None,
                      fit: str = "pad") -> Path:
    """Convert MobileFace's MXNet files (`mobileface.import_mobileface`) and write a CNN-R export (fp16
    safetensors, written atomically) that `load_cnn_r` and the training recipes' ``init_cnn_r`` read."""
    from ..core.training import fp16_state
    from .mobileface import import_mobileface

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must name a .safetensors file, got {out}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"{out.parent} is not a folder")
    model = import_mobileface(params, symbol, fit)
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"source": "MobileFace_Identification_V2 (becauseofAI/MobileFace @128cea33), imported from "
                       f"{Path(params).name}", "licence": "MIT"}
    save_weights(fp16_state(model), out, export_metadata("cnn_r", model, extra))
    return out
