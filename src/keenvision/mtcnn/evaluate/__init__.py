"""Face-detection benchmarks, one module each: WIDER FACE val AP (`widerface`), FDDB's discrete ROC (`fddb`) and
dlib's example faces (`dlib_examples`); `predictions` writes and reads the files those protocols take from
`MTCNN.detect` output. ``docs/mtcnn_evaluation.md`` lists the formats and every deviation from the original tools.
"""

from .dlib_examples import evaluate_dlib_examples
from .fddb import FDDB_FOLDS, evaluate_fddb, fddb_overlaps, load_fddb_ground_truth
from .predictions import read_fddb_predictions, write_fddb_predictions, write_widerface_predictions
from .widerface import (
           WIDER_SETTINGS,
           WIDER_THRESHOLDS,
           WiderGroundTruth,
           evaluate_widerface,
           load_widerface_ground_truth,
)

__all__ = ["FDDB_FOLDS", "WIDER_SETTINGS", "WIDER_THRESHOLDS", "WiderGroundTruth", "evaluate_dlib_examples",
           "evaluate_fddb", "evaluate_widerface", "fddb_overlaps", "load_fddb_ground_truth",
           "load_widerface_ground_truth", "read_fddb_predictions", "write_fddb_predictions",
           "write_widerface_predictions"]
