"""The object-discovery methods by name, and the interface they share.

A method turns a batch of images into float32 maps `(B, h, w)` on its own grid (the ViT patch grid, the
ResNet's last stage, the saliency image, ...); the map always covers the whole image. Pooling onto the MAE
patch grid happens later, through `resample_attention_map`.
"""

from collections.abc import Sequence
from typing import ClassVar

import torch

METHODS: dict[str, type["ObjectDiscoveryMethod"]] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


class ObjectDiscoveryMethod:
    """Base class: `method(images) -> (B, h, w)` float32 on the method's device.

    Subclasses set `name`, `needs_model`, `default_model` and implement `preprocess` (images -> inputs
    tensor on CPU), `compute` (inputs on the device -> maps) and `params` (everything that changes the
    output, for the cache fingerprint).
    """

    name: ClassVar[str]
    online: ClassVar[bool] = True  # has a `preprocess_pixels` (tensor) path: usable for online maps
    needs_model: ClassVar[bool] = False
    default_model: ClassVar[str | None] = None
    device: torch.device = torch.device("cpu")

    def preprocess(self, images: Sequence, row_offset=None) -> torch.Tensor:
        raise NotImplementedError

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The tensor path of `preprocess`, for online maps: `(B, 3, H, W)` RGB in [0, 1] on the method's device
        (already decoded and cropped) -> the inputs of `compute`, with the same resize and normalisation."""
        raise ValueError(f"method {self.name!r} cannot compute maps from pixels on the training device (online); "
                         f"the online methods are {sorted(n for n, c in METHODS.items() if c.online)}")

    def compute(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict:
        raise NotImplementedError

    def __call__(self, images: Sequence, row_offset=None) -> torch.Tensor:
        inputs = self.preprocess(images, row_offset=row_offset)
        return self.compute(inputs.to(self.device))


class DetectorMethod(ObjectDiscoveryMethod):
    """A method around a pretrained network (dino, tokencut, gradcam): what they share.

    Subclasses set `load_model` (a staticmethod `(name_or_path, device, dtype, revision) -> model`), check the
    model and their own options, call `_init_detector`, and return their own options from `method_params`.
    """

    needs_model = True
    load_model = None
    # a staticmethod `(name_or_path, revision, flag) -> config`: reads only the config and refuses a checkpoint
    # the method cannot use, naming `flag`; run before any data work (AttentionMapStep) and by `load_model`
    check_model = None

    def _init_detector(self, model, image_size, image_mean, image_std, dtype) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.image_size = image_size
        self.image_mean, self.image_std, self.dtype = tuple(image_mean), tuple(image_std), dtype

    @classmethod
    def from_pretrained(cls, model_name_or_path, device="cpu", dtype="float32", revision=None, **params):
        return cls(cls.load_model(model_name_or_path, device, dtype, revision), dtype=dtype, **params)

    def preprocess(self, images: Sequence, row_offset=None) -> torch.Tensor:
        from .preprocessing import preprocess_images

        return preprocess_images(images, self.image_size, self.image_mean, self.image_std, row_offset)

    def preprocess_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        from .preprocessing import normalize_pixels, resize_pixels

        return normalize_pixels(resize_pixels(pixels, self.image_size), self.image_mean, self.image_std)

    def method_params(self) -> dict:
        return {}

    def params(self) -> dict:
        return {"image_size": self.image_size, **self.method_params(), "image_mean": self.image_mean,
                "image_std": self.image_std, "dtype": self.dtype}


def build_method(
    method: str,
    model_name_or_path: str | None = None,
    device: str | torch.device = "cpu",
    **params,
) -> ObjectDiscoveryMethod:
    """Build a method by name: `dino`, `tokencut`, `gradcam` (load `model_name_or_path` with transformers),
    `spectral_residual`, `column` (no model)."""
    if method not in METHODS:
        raise ValueError(f"unknown object-discovery method {method!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[method]
    if cls.needs_model:
        if not model_name_or_path:
            raise ValueError(
                f"method {method!r} needs a model: pass model_name_or_path, e.g. {cls.default_model!r} "
                "(a Hub id or a local folder written by save_pretrained)"
            )
        return cls.from_pretrained(model_name_or_path, device=device, **params)
    if model_name_or_path:
        raise ValueError(f"method {method!r} uses no model, but model_name_or_path={model_name_or_path!r} was given")
    return cls(device=device, **params)
