"""The multi-instance LSTM engagement regressor of EmotiW 2019 (Wang et al., ICMI'19; docs/engagement.md).

A video is a bag of S segments (instances). A shared LSTM encodes each segment, an MLP maps its last output to a
segment feature ``f_k``, attention ``a_k = sigmoid(w . f_k + b)`` pools them as ``sum_k a_k f_k / sum_k a_k``, and
the intensity averages two heads on the pooled feature, as in the public 2019 code: ``sigmoid(Linear(F, 1))`` and
``sigmoid(Linear(4, 1)(Linear(F, 4)))`` (a 4-level "class score" layer followed by a regression).

Two input forms:
- ``[B, S, T, D]``: T frames (or steps) per segment; the LSTM runs over the T steps WITHIN each segment (the 2019
  design: 10 segments x 120 frames) and its last step is the segment's encoding.
- ``[B, S, D]``: one feature vector per segment (the EmotiW NPZ features); each segment is a length-1 sequence, so the
  LSTM acts as a gated non-linear encoder of the segment, with no temporal modelling (as in the 2018 code,
  docs/engagement.md). Either way the pooling is order-free: the bag's segments are exchangeable.

Sizes are far below the 2019 code's (hidden 512, MLP 1024-512-128, ~4.4 M parameters): the training set has 146
videos, and the shipped ensemble holds several models. The defaults give ~55 k parameters (~0.2 MB fp32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MILEngagementRegressor(nn.Module):
    """Bag-of-segments engagement regressor.

    Args:
        input_dim: D, features per segment (per frame for 4-d input).
        hidden: LSTM hidden size.
        lstm_layers: stacked LSTM layers (2 in the 2019 code).
        mlp: widths of the MLP after the LSTM (ReLU after each); the last is the segment feature width F.
        dropout: dropout on the LSTM output and between MLP layers (0 in the 2019 code).
        input_mlp: widths of dense layers (ReLU) applied to each segment's features before the LSTM (none in the
            2019 code; the 2019 winners' OpenFace/VGGFace2 models have one, littleZY/SML_EW_EmotiW2019).
        across_segments: for ``[B, S, D]`` input, run the LSTM over the S segments in order (a video-level sequence,
            as the 2019 winners do) instead of over each segment alone; pooling stays attention over segments.

    ``forward(x)`` -> ``(intensity [B] in [0, 1], segment_scores [B, S] in [0, 1])``; the segment scores are the
    same two heads applied to each segment's own feature, for a timeline of the video.
    """

    def __init__(self, input_dim: int, hidden: int = 64, lstm_layers: int = 2, mlp: Sequence[int] = (128, 64, 32),
                 dropout: float = 0.0, input_mlp: Sequence[int] = (), across_segments: bool = False):
        super().__init__()
        if not mlp:
            raise ValueError("mlp needs at least one width (the segment feature width)")
        self.input_dim, self.hidden, self.lstm_layers = int(input_dim), int(hidden), int(lstm_layers)
        self.mlp_widths, self.dropout = tuple(int(w) for w in mlp), float(dropout)
        self.input_widths, self.across_segments = tuple(int(w) for w in input_mlp), bool(across_segments)
        layers: list[nn.Module] = []
        width = self.input_dim
        for out in self.input_widths:
            layers += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(self.dropout)]
            width = out
        self.input_layers = nn.Sequential(*layers)
        self.lstm = nn.LSTM(width, self.hidden, num_layers=self.lstm_layers, batch_first=True,
                            dropout=self.dropout if self.lstm_layers > 1 else 0.0)
        layers: list[nn.Module] = [nn.Dropout(self.dropout)]
        width = self.hidden
        for out in self.mlp_widths:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.mlp = nn.Sequential(*layers)
        self.attention = nn.Linear(width, 1)  # a_k = sigmoid(w . f_k + b)
        self.direct_head = nn.Linear(width, 1)  # sigmoid(Linear(F, 1))
        self.level_scores = nn.Linear(width, 4)  # the 2019 code's 4-way "classify" layer ...
        self.level_head = nn.Linear(4, 1)  # ... regressed: sigmoid(Linear(4, 1))

    def architecture(self) -> dict:
        """The constructor's arguments (stored in exports)."""
        return {"input_dim": self.input_dim, "hidden": self.hidden, "lstm_layers": self.lstm_layers,
                "mlp": list(self.mlp_widths), "dropout": self.dropout, "input_mlp": list(self.input_widths),
                "across_segments": self.across_segments}

    def segment_features(self, inputs: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` or ``[B, S, T, D]`` -> segment features ``f`` ``[B, S, F]``."""
        if inputs.ndim not in (3, 4) or inputs.shape[-1] != self.input_dim:
            raise ValueError(f"expected [B, S, {self.input_dim}] or [B, S, T, {self.input_dim}] inputs, "
                             f"got {tuple(inputs.shape)}")
        inputs = self.input_layers(inputs)
        if inputs.ndim == 3 and self.across_segments:
            encoded, _ = self.lstm(inputs)  # one sequence of S segments per video: [B, S, hidden]
            return self.mlp(encoded)
        if inputs.ndim == 3:
            inputs = inputs.unsqueeze(2)  # each segment a length-1 sequence
        batch, segments, steps, dim = inputs.shape
        encoded, _ = self.lstm(inputs.reshape(batch * segments, steps, dim))
        return self.mlp(encoded[:, -1]).reshape(batch, segments, -1)

    def attention_weights(self, features: torch.Tensor) -> torch.Tensor:
        """``a_k = sigmoid(w . f_k + b)``: ``[B, S, F]`` -> ``[B, S]`` in (0, 1), not normalised."""
        return torch.sigmoid(self.attention(features)).squeeze(-1)

    @staticmethod
    def pool(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Attention pooling ``sum_k a_k f_k / sum_k a_k``: ``[B, S, F]``, ``[B, S]`` -> ``[B, F]``."""
        return (features * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """The two heads averaged (2019 code): ``[..., F]`` -> intensity ``[...]`` in [0, 1]."""
        direct = torch.sigmoid(self.direct_head(features))
        via_levels = torch.sigmoid(self.level_head(self.level_scores(features)))
        return ((direct + via_levels) / 2).squeeze(-1)

    def embed(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(segment features [B, S, F], attention [B, S], pooled [B, F])`` (the rank loss acts on ``pooled``)."""
        features = self.segment_features(inputs)
        weights = self.attention_weights(features)
        return features, weights, self.pool(features, weights)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, _, pooled = self.embed(inputs)
        return self.head(pooled), self.head(features)
