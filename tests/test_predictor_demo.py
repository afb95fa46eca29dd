"""The temporary ``sa-engine run`` demo writes its PNG and says the weights are random."""

from __future__ import annotations

import numpy as np
from PIL import Image

from stages.demo import main, make_scene


def test_demo_writes_png_with_masks(tmp_path, capsys):
    assert main(["--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and str(tmp_path / "predictor_demo.png") in out
    image, clicks = make_scene()
    with Image.open(tmp_path / "predictor_demo.png") as png:
        assert png.size == (2 * image.shape[1] + 10, image.shape[0])
        right = np.asarray(png.convert("RGB"))[:, image.shape[1] + 10 :]
    assert np.abs(right.astype(int) - image.astype(int)).max() > 0  # masks were drawn
    assert clicks.shape == (3, 2)
