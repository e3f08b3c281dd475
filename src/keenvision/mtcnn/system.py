"""MTCNN face detection and 5-point alignment (Zhang et al., IEEE SPL 2016). `keen detect` runs it."""

from ..core.system import System, Training, register_system

TRAINING = Training("keenvision.mtcnn.train:train_from_config", None, "configs/mtcnn/{pnet,rnet,onet}.yaml")
SYSTEM = register_system(System("mtcnn", "MTCNN tools: weight import, training, evaluation, benchmark", __doc__,
                                "keenvision.mtcnn.detector:load", TRAINING, "MTCNN: faces", order=10))
