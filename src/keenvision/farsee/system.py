"""FarSee-Net (Zhang & Zhang, ICRA 2020) real-time semantic segmentation. `keen segment` runs it."""

from ..core.system import System, Training, register_system

TRAINING = Training("keenvision.farsee.train:train_farsee", "keenvision.farsee.train:export_checkpoint",
                    "configs/farsee/camvid_mobilenet.yaml", own_options=True)
SYSTEM = register_system(System("farsee", "FarSee-Net tools: training, evaluation, benchmark, ONNX export", __doc__,
                                "keenvision.farsee.segment:load_model", TRAINING, app_tab="FarSee-Net: street "
                                "segmentation", order=40))
