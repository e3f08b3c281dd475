"""DiffRate (Chen et al., ICCV 2023) for timm ViTs. --model: a timm ViT name (random weights unless --pretrained), a
.safetensors export of keenvision.diffrate.train, or cifar10-vit. --schedule: a schedule JSON,
compression_rate.json#MODEL/GFLOPS, published:MODEL/GFLOPS or shipped:MODEL/GFLOPS."""

from ..core.system import System, Training, register_system

SYSTEM = register_system(System(
    "diffrate", "DiffRate token pruning/merging: FLOPs, speed, accuracy, search", __doc__,
    "keenvision.diffrate.models:load", app_tab="DiffRate: ViT token compression", order=50,
    training=Training("keenvision.diffrate.train:train_cifar_vit", "keenvision.diffrate.train:export_checkpoint",
                      "configs/diffrate/cifar10_vit.yaml", own_options=True)))
