"""SICNN (Zhang et al., ECCV 2018) x8 face hallucination, 12x14 -> 96x112. `keen hallucinate` runs it."""

from ..core.system import System, Training, register_system

TRAINING = Training("keenvision.sicnn.train:train_sicnn", "keenvision.sicnn.train:export_checkpoint",
                    "configs/sicnn/<phase>.yaml (one phase)", own_options=True)
SYSTEM = register_system(System("sicnn", "SICNN tools: face preparation, training, evaluation, benchmark", __doc__,
                                "keenvision.sicnn.hallucinate:load", TRAINING, "SICNN: face hallucination", 20))
