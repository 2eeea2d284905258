"""One decode and one RGB conversion for pre-training, evaluation and the maps (issue 9, items 6 and 9b)."""

import numpy as np
import torch
from PIL import Image

from modeling_attg_mae.data import EvalTransform, PretrainCollator, PretrainTransform
from modeling_attg_mae.data.images import decode_image, to_rgb_image
from modeling_attg_mae.object_discovery import preprocessing


def _sixteen_bit_png(tmp_path):
    values = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000 + 1000).astype(np.uint16)  # 1000 .. 64000
    Image.fromarray(values).save(tmp_path / "depth.png")
    image = Image.open(tmp_path / "depth.png")
    assert image.mode in ("I;16", "I")  # a real 16-bit PNG, as PIL reads it from disk
    return image, values


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    image, values = _sixteen_bit_png(tmp_path)
    rgb = np.asarray(to_rgb_image(image))
    expected = np.floor(values * 255.0 / 65535.0).astype(np.uint8)  # 1000 -> 3, 64000 -> 249
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == expected).all() and (rgb[..., 2] == expected).all()
    assert rgb.max() == 249 and rgb.min() == 3  # convert("RGB") would give 255 everywhere
    # the evaluation / pre-training transforms see the same picture (a gradient, not a white square)
    pixels, _ = EvalTransform(8)(Image.open(tmp_path / "depth.png"))
    assert pixels[0].std() > 0.5
    batch = PretrainCollator(PretrainTransform(8, 4, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_probability=0.0),
                             require_attention_map=False)([{"image": {"bytes": None, "path": str(tmp_path / "depth.png")}}])
    assert batch["pixel_values"][0, 0].std() > 0.5
    # the maps path uses the very same functions
    assert preprocessing.to_rgb is to_rgb_image and preprocessing.decode_image is decode_image
    maps_pixels = preprocessing.preprocess_images([Image.open(tmp_path / "depth.png")], 8, (0, 0, 0), (1, 1, 1))
    torch.testing.assert_close(maps_pixels[0, 0], torch.from_numpy(expected).float() / 255)


def test_decode_names_split_row_and_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    import pytest

    with pytest.raises(ValueError, match=r"cannot read the image in split 'validation', row 5 \(file .*bad\.png\)"):
        decode_image({"bytes": None, "path": str(tmp_path / "bad.png")}, 5, "validation")
    with pytest.raises(ValueError, match=r"cannot read the image in row 2: "):
        decode_image({"bytes": b"junk", "path": None}, 2)
