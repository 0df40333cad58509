"""Built-in encoder families; importing this package registers them."""
from . import conv_stem_vit, hf_family, open_clip_family, timm_family, torchvision_family  # noqa: F401
