"""What ``keen batch`` runs per system: how a worker loads the model once, and how it turns a batch of image paths
into rows (one per path, in order), writing the optional images on the way.

Each system goes through the same code its own command runs (`keenvision.mtcnn.files.detect_files`,
`Segmenter.segment_files`, `Hallucinator.hallucinate_files`) and keeps that command's ``--json`` fields, so a row
says what ``keen detect|segment|hallucinate --json`` says about the same file. Nothing here imports torch at import
time: the CLI builds its parser from `SYSTEMS` without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# the row fields every system has: the key, the outcome, and the image's original size
COMMON_FIELDS = (("path", "string"), ("status", "string"), ("error", "string"), ("width", "int32"),
                 ("height", "int32"))


@dataclass(frozen=True)
class Outputs:
    """Where a worker writes the files that rows point to: ``out/images`` (annotated images, overlays, comparison
    strips; only with ``save_images``), ``out/labels`` (segment) and ``out/crops`` (hallucinate)."""

    out: str
    save_images: bool = False

    def folder(self, name: str) -> Path:
        return Path(self.out) / name


def output_stem(path: str) -> str:
    """``<file stem>-<10 hex digits of the path's SHA-1>``: the same for the same input in every worker and every
    rerun (a retried batch overwrites its own files), never the same for two inputs (``a/p.jpg``, ``b/p.jpg``)."""
    return f"{Path(path).stem}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"


def ok_row(path: str, width: int, height: int, **fields) -> dict:
    return {"path": path, "status": "ok", "error": None, "width": int(width), "height": int(height), **fields}


def error_row(path: str, message: str) -> dict:
    """A row for an input that gave no result; ``message`` is one line naming the input."""
    return {"path": path, "status": "error", "error": message.strip().splitlines()[0] if message.strip() else "error"}


# --- detect -------------------------------------------------------------------------------------------------------

def _load_detector(options: dict, device: str | None):
    from ..mtcnn import MTCNN

    return MTCNN(device=device, **options)


def _detect_rows(detector, paths: list[str], outputs: Outputs) -> list[dict]:
    from ..mtcnn.files import detect_files, write_outputs

    rows = []
    for result, pixels in detect_files(detector, paths, batch_size=8):  # keen detect's batch: the same calls
        path = str(result.path)
        if result.error is not None:
            rows.append(error_row(path, result.error))
            continue
        record = result.to_dict()
        image = None
        if outputs.save_images:
            image = str(write_outputs(result, pixels, outputs.folder("images"), stem=output_stem(path))[0])
        rows.append(ok_row(path, record["width"], record["height"], faces=record["faces"], image=image))
    return rows


def _detect_schema(pa):
    face = pa.struct([("box", pa.list_(pa.float64())), ("score", pa.float64()),
                      ("landmarks", pa.list_(pa.list_(pa.float64())))])
    return [("faces", pa.list_(face)), ("image", pa.string())]


# --- segment ------------------------------------------------------------------------------------------------------

def _load_segmenter(options: dict, device: str | None):
    from ..farsee.segment import Segmenter

    options = dict(options)
    options.pop("alpha", None)  # the overlay's opacity: used when writing, not by the model
    return Segmenter(device=device, **options)


def _segment_rows(segmenter, paths: list[str], outputs: Outputs, alpha: float = 0.5) -> list[dict]:
    from ..core.io import write_image
    from ..farsee.segment import overlay, write_labels

    rows = []
    for result, pixels in segmenter.segment_files(paths):
        path = str(result.path)
        if result.error is not None:
            rows.append(error_row(path, result.error))
            continue
        record = result.to_dict(segmenter.class_names)
        stem = output_stem(path)
        labels = outputs.folder("labels") / f"{stem}.png"
        write_labels(labels, result.segmentation.labels)
        image = None
        if outputs.save_images:
            image = outputs.folder("images") / f"{stem}_overlay.png"
            write_image(image, overlay(pixels, result.segmentation.labels, segmenter.palette, alpha))
        shares = [{"class": name, "share": share} for name, share in record["class_fractions"].items()]
        rows.append(ok_row(path, record["width"], record["height"], class_shares=shares, labels=str(labels),
                           image=str(image) if image is not None else None))
    return rows


def _segment_schema(pa):
    share = pa.struct([("class", pa.string()), ("share", pa.float64())])
    return [("class_shares", pa.list_(share)), ("labels", pa.string()), ("image", pa.string())]


# --- hallucinate --------------------------------------------------------------------------------------------------

def _load_hallucinator(options: dict, device: str | None):
    from ..sicnn.hallucinate import Hallucinator

    options = dict(options)
    options.pop("all_faces", None)  # a per-call choice, not the model's
    return Hallucinator(device=device, **options)


def _hallucinate_rows(hallucinator, paths: list[str], outputs: Outputs, all_faces: bool = False) -> list[dict]:
    from ..core.io import write_image
    from ..sicnn.hallucinate import write_comparisons

    rows = []
    for result in hallucinator.hallucinate_files(paths, all_faces=all_faces):
        path = str(result.path)
        if result.error is not None and result.size is None:  # unreadable
            rows.append(error_row(path, result.error))
            continue
        # a photo without a face is a result (no faces), not a failure: at scale most photos may have none
        stem = output_stem(path)
        comparisons = write_comparisons(result, outputs.folder("images"), stem) if outputs.save_images else []
        faces = []
        for index, face in enumerate(result.faces):
            crop = None
            if face.hallucinated:
                crop = outputs.folder("crops") / f"{stem}_face{index}.png"
                write_image(crop, face.sicnn)
            comparison = comparisons[index] if comparisons else None
            faces.append(face.to_dict() | {"crop": str(crop) if crop else None,
                                           "comparison": str(comparison) if comparison else None})
        rows.append(ok_row(path, *result.size, faces=faces, note=result.note))
    return rows


def _hallucinate_schema(pa):
    face = pa.struct([("box", pa.list_(pa.float64())), ("score", pa.float64()),
                      ("landmarks", pa.list_(pa.list_(pa.float64()))), ("alignment_scale", pa.float64()),
                      ("small", pa.bool_()), ("status", pa.string()), ("crop", pa.string()),
                      ("comparison", pa.string())])
    return [("faces", pa.list_(face)), ("note", pa.string())]


@dataclass(frozen=True)
class System:
    """One system ``keen batch`` runs: ``load(options, device)`` -> model, once per worker; ``rows(model, paths,
    outputs, **call_options)`` -> one row per path, in order; ``fields(pyarrow)`` -> its columns after
    `COMMON_FIELDS`; ``call_options``: the options that go to ``rows`` rather than to ``load``."""

    name: str
    load: Callable
    rows: Callable
    fields: Callable
    call_options: tuple[str, ...] = ()

    def schema(self):
        """The ``pyarrow.Schema`` of its rows: fixed, so a block of error rows only reads like any other."""
        import pyarrow as pa

        return pa.schema([(name, getattr(pa, kind)()) for name, kind in COMMON_FIELDS] + self.fields(pa))


SYSTEMS = {
    "detect": System("detect", _load_detector, _detect_rows, _detect_schema),
    "segment": System("segment", _load_segmenter, _segment_rows, _segment_schema, ("alpha",)),
    "hallucinate": System("hallucinate", _load_hallucinator, _hallucinate_rows, _hallucinate_schema,
                          ("all_faces",)),
}
