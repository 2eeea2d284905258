"""`gradcam`: Grad-CAM (Selvaraju et al. 2017) on a supervised ResNet-50 (paper Sec. 3.3).

Target: the top-scoring class of each image. Feature maps A: the output of the last stage, `(B, C, h, w)`
(7x7 at 224 px). Weights: the spatial mean of d score / d A per channel. Map: ReLU(sum_c w_c A_c), `(B, h, w)`.
The data pipeline average-pools (or upsamples) it to the MAE grid with `resample_attention_map`.
"""

from collections.abc import Sequence

import torch
from transformers import ResNetForImageClassification

from .dino import DTYPES, DetectorDtype
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, to_size
from .registry import DetectorMethod, register


_HEAD_NEEDED = ("Grad-CAM needs class scores: use a ResNetForImageClassification checkpoint, e.g. microsoft/resnet-50 "
                "(a ResNetModel has no classification head, and one added at load time would be random)")


def check_resnet_classifier(model_name_or_path: str, revision=None, flag: str = "--model_name_or_path"):
    """The detector's config, read cheaply (no weights): it must be a ResNet saved with its classification head."""
    from ..model_source import load_config

    config = load_config(model_name_or_path, flag, revision=revision)
    if config.model_type != "resnet":
        raise ValueError(
            f"{flag} {model_name_or_path!r} is a {config.model_type!r} checkpoint; gradcam needs a supervised ResNet "
            "classifier (e.g. microsoft/resnet-50)"
        )
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith("ForImageClassification") for name in architectures):
        raise ValueError(f"{flag} {model_name_or_path!r} is a {'/'.join(architectures)} checkpoint without a "
                         f"classification head; {_HEAD_NEEDED}")
    return config


def load_resnet_classifier(
    model_name_or_path: str, device: str | torch.device = "cpu", dtype: DetectorDtype = "float32", revision=None
) -> ResNetForImageClassification:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    check_resnet_classifier(model_name_or_path, revision)
    model, info = ResNetForImageClassification.from_pretrained(
        model_name_or_path, revision=revision, dtype=DTYPES[dtype], output_loading_info=True)
    # a config without `architectures` does not say whether the head was saved: the missing weights do
    if any(key.startswith("classifier") for key in info["missing_keys"]):
        raise ValueError(f"{model_name_or_path!r} has no classification head weights "
                         f"({sorted(k for k in info['missing_keys'] if k.startswith('classifier'))}); {_HEAD_NEEDED}")
    return model.eval().requires_grad_(False).to(device)


def grad_cam(model: ResNetForImageClassification, pixel_values: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of the top-scoring class on the last stage: `(B, 3, H, W)` -> `(B, h, w)` float32, >= 0."""
    captured = {}

    def keep_features(module, args, output):
        if not output.requires_grad:  # frozen model: make the features the leaf we differentiate against
            output.requires_grad_(True)
        captured["features"] = output

    handle = model.resnet.encoder.stages[-1].register_forward_hook(keep_features)
    try:
        with torch.enable_grad():
            logits = model(pixel_values=pixel_values.to(model.dtype)).logits  # (B, classes)
            target = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            # images are independent in eval mode, so one backward of the summed scores gives every image's own
            score = logits.gather(1, target).sum()
            (gradients,) = torch.autograd.grad(score, captured["features"])  # (B, C, h, w)
    finally:
        handle.remove()
    features = captured["features"].detach().float()
    channel_weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return torch.relu((channel_weights * features).sum(dim=1))  # (B, h, w)


@register
class GradCAM(DetectorMethod):
    """Grad-CAM on a `ResNetForImageClassification`.

    Args:
        image_size: classifier input size; the whole image is resized to it (aspect not kept).
    """

    name = "gradcam"
    default_model = "microsoft/resnet-50"
    load_model = staticmethod(load_resnet_classifier)
    check_model = staticmethod(check_resnet_classifier)

    def __init__(
        self,
        model,
        image_size: int | Sequence[int] = 224,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        dtype: DetectorDtype = "float32",
    ):
        if not isinstance(model, ResNetForImageClassification):
            raise ValueError(f"gradcam needs a ResNetForImageClassification, got {type(model).__name__}")
        self._init_detector(model, to_size(image_size), image_mean, image_std, dtype)

    def compute(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return grad_cam(self.model, pixel_values)
