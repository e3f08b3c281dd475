"""Engagement intensity regression: a multi-instance LSTM over video segments, bagged. Inputs: videos (our
MTCNN face pipeline) or OpenFace 2.x CSV files."""

from ..core.system import System, Training, register_system

# seconds-long models fitted by epochs in one process: no steps, no resume, no checkpoint to export
TRAINING = Training("keenvision.engagement.train:train_engagement", None, "configs/engagement/openface_15seg.yaml",
                    steps=False, own_options=True)
SYSTEM = register_system(System(
    "engagement", "engagement intensity of learners' videos (EmotiW 2018/2019 winners' method)", __doc__,
    "keenvision.engagement.ensemble:load", TRAINING, app_tab="Engagement", order=30))
