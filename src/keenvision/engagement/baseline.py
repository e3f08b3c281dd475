"""The simple baseline every engagement result stands beside: ridge regression on each video's segment mean and std.

On EmotiW 2019 validation (48 new learners) ridge on the OpenFace 15-segment statistics scored MSE 0.0905 and on
VGGFace2 0.0855, against 0.0952 for the training mean and 0.0888 for the 2019 MIL-LSTM ensemble (issue 18): on
these few videos a model has to beat it, not only the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import FeatureStandardiser

RIDGE_PENALTIES = (1.0, 10.0, 100.0, 1000.0)


def segment_statistics(standard: np.ndarray) -> np.ndarray:
    """Standardised features ``[N, S, D]`` -> ``[N, 2D]``: each feature's mean and std over the video's segments."""
    return np.concatenate([standard.mean(1), standard.std(1)], 1)


@dataclass(frozen=True)
class RidgeEngagement:
    """``clip(x W + b, 0, 1)`` on `segment_statistics` of robustly standardised features."""

    standardiser: FeatureStandardiser
    weights: np.ndarray  # [2D]
    bias: float
    penalty: float

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, penalty: float, clip: float = 5.0) -> RidgeEngagement:
        standardiser = FeatureStandardiser.fit(features, clip)
        statistics = segment_statistics(standardiser(features)).astype(np.float64)
        mean_x, mean_y = statistics.mean(0), float(np.mean(labels))
        centred = statistics - mean_x
        weights = np.linalg.solve(centred.T @ centred + penalty * np.eye(centred.shape[1]),
                                  centred.T @ (np.asarray(labels, np.float64) - mean_y))
        return cls(standardiser, weights, mean_y - float(mean_x @ weights), float(penalty))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Raw features ``[N, S, D]`` -> intensity ``[N]`` in [0, 1]."""
        statistics = segment_statistics(self.standardiser(features)).astype(np.float64)
        return np.clip(statistics @ self.weights + self.bias, 0, 1)


def fit_ridge(features: np.ndarray, labels: np.ndarray, folds: np.ndarray,
              penalties: Sequence[float] = RIDGE_PENALTIES, clip: float = 5.0) -> RidgeEngagement:
    """Ridge with the penalty of least CV MSE over ``folds`` (a fold index ``[N]`` of these videos, e.g. by
    learner), refitted on all of them."""
    errors = []
    for penalty in penalties:
        squared = []
        for fold in np.unique(folds):
            fit, check = folds != fold, folds == fold
            model = RidgeEngagement.fit(features[fit], labels[fit], penalty, clip)
            squared.append((model.predict(features[check]) - labels[check]) ** 2)
        errors.append(float(np.concatenate(squared).mean()))
    return RidgeEngagement.fit(features, labels, penalties[int(np.argmin(errors))], clip)
