"""Engagement's tab of ``keen app``: `engagement` computes it without Gradio, `build_view` lays it out."""

from __future__ import annotations

import functools

import numpy as np

from ..core.errors import ImageReadError
from ..core.uploads import MAX_VIDEO_SECONDS, VIDEO_SUFFIXES, AppInputError, png_pixels, two_column_view, upload_path


@functools.cache
def engagement_model():
    """(name, ensemble) of the default shipped model, loaded once."""
    from .predict import DEFAULT_MODEL, resolve_model

    return DEFAULT_MODEL, resolve_model(DEFAULT_MODEL)


def engagement(upload=None) -> tuple[np.ndarray, str, dict]:
    """Engagement intensity of a video (or an OpenFace CSV): (the segment timeline plot, a line, the JSON)."""
    from ..core.io import video_info
    from .predict import plot_timeline, predict_file

    path = upload_path(upload, "video")
    if path.suffix.lower() not in VIDEO_SUFFIXES + (".csv",):
        raise AppInputError(f"{path.name}: expected a video ({', '.join(VIDEO_SUFFIXES)}) or an OpenFace .csv")
    if path.suffix.lower() != ".csv":
        try:
            info = video_info(path)
        except ImageReadError:
            raise AppInputError(f"{path.name}: cannot open as a video") from None
        seconds = info["frames"] / info["fps"] if info["fps"] > 0 else 0.0
        if info["frames"] <= 0:
            raise AppInputError(f"{path.name}: no decodable frames")
        if seconds > MAX_VIDEO_SECONDS:
            raise AppInputError(f"{path.name}: {seconds / 60:.1f} minutes; the app takes up to "
                                f"{MAX_VIDEO_SECONDS // 60} (keen engagement predict takes any length)")
    name, model = engagement_model()
    try:
        prediction = predict_file(path, model)
    except (ImageReadError, ValueError) as error:
        raise AppInputError(f"{path.name}: {str(error).split(': ', 1)[-1]}") from None
    prediction.model = name
    plot = png_pixels(lambda out: plot_timeline(prediction, out))
    record = prediction.to_dict()
    record["source"] = path.name
    summary = (f"**engagement {prediction.intensity:.2f}** (nearest EmotiW level {prediction.level:g}, "
               f"{record['level_name']}) over {len(prediction.per_segment)} segments, model {name}"
               + (" (approximate features)" if prediction.approximate else ""))
    return plot, summary, record


def build_view(gr, shown) -> None:
    (clip,), run, (timeline, score) = two_column_view(
        gr, "Engagement intensity of a learner's video, per segment and for the video (EmotiW levels 0, 0.33, 0.66, "
        "1), from our face pipeline's gaze and head pose.",
        [lambda: gr.File(label="video (or an OpenFace CSV)", type="filepath")], "Score engagement",
        [lambda: gr.Image(label="segment timeline", type="numpy", format="png"), gr.Markdown])
    record = gr.JSON(label="JSON")
    run.click(shown(engagement), [clip], [timeline, score, record], api_name="engagement")
