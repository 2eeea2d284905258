"""Object discovery: attention maps for AttG-MAE's guided loss (paper Sec. 3.3), as a `datasets` map step.

Methods (each `method(images) -> (B, h, w)` float32 covering the whole image, resized without keeping the
aspect ratio): `dino`, `tokencut`, `gradcam`, `spectral_residual`, `column`. See `add_attention_maps` (a stored
column) and `OnlineAttentionMaps` (every training batch, from the augmented crop, on the training device).
"""

from .column import ColumnMap
from .dino import DinoAttention, load_vit_detector
from .gradcam import GradCAM, grad_cam, load_resnet_classifier
from .map_step import AttentionMapStep, add_attention_maps
from .online import OnlineAttentionMaps, online_methods
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, preprocess_images, to_rgb
from .registry import METHODS, ObjectDiscoveryMethod, build_method
from .spectral_residual import SpectralResidual, spectral_residual_saliency
from .tokencut import TokenCut, normalized_cut

__all__ = [
    "METHODS", "AttentionMapStep", "ColumnMap", "DinoAttention", "GradCAM", "IMAGENET_MEAN", "IMAGENET_STD",
    "ObjectDiscoveryMethod", "OnlineAttentionMaps", "SpectralResidual", "TokenCut", "add_attention_maps", "build_method", "grad_cam",
    "load_resnet_classifier", "load_vit_detector", "normalized_cut", "online_methods", "preprocess_images",
    "spectral_residual_saliency", "to_rgb",
]
