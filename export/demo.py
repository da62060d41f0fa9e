"""A deterministic, clearly labelled, UNTRAINED demo checkpoint in the original key layout.

Its scores mean nothing. It exists so that ``make demo`` and the tests can exercise export and
inference end to end without the published 226 MB checkpoints, which cannot be downloaded here.
A randomly initialised ResNeXt gives logits so large that every probability is 0 or 1; to keep
outputs spread out, BatchNorm statistics are re-estimated on image-like crops and ``linear1`` is
rescaled so the frame logit difference has mean 0 and std ~2 on those crops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.deps import require
from preprocess.crop import normalize

log = logging.getLogger(__name__)

DEMO_NAME = "DEMO-UNTRAINED_model_{seq_len}_frames.pt"


def calibrate_untrained(model, crops: np.ndarray, *, logit_std: float = 2.0) -> None:
    """Re-estimate BatchNorm statistics on ``crops`` (normalised NCHW float32) and rescale
    ``linear1`` so per-frame outputs are spread out rather than saturated."""
    torch = require("torch")
    x = torch.from_numpy(crops)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over every batch seen
    model.train()
    with torch.no_grad():
        for chunk in x.split(16):
            model.model(chunk)
    model.eval()
    with torch.no_grad():
        _, x_lstm = model.lstm_outputs(x.unsqueeze(0))
        h = x_lstm[0].double()
        # Put the class direction along the main direction in which h varies over the crops:
        # the largest signal for a given weight norm, so fp32 noise is amplified least.
        centred = h - h.mean(0)
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        d = centred @ direction
        scale = logit_std / float(d.std().clamp_min(1e-12))
        w = model.linear1.weight
        half = (direction * scale / 2).to(w.dtype)
        w[0] = -half
        w[1] = half
        # zero mean logit difference over the crops
        model.linear1.bias[0] = 0.0
        model.linear1.bias[1] = -float(h.mean(0) @ direction) * scale


def make_demo_checkpoint(
    outdir: str | Path, *, seq_len: int = 20, seed: int = 0, calib: np.ndarray | None = None
) -> Path:
    """Write the demo checkpoint into ``outdir`` and return its path (deterministic for a given
    torch version and seed). ``calib``: optional N x 112 x 112 x 3 uint8 BGR crops."""
    torch = require("torch", purpose="making the demo checkpoint")
    from export.onnx_export import synthetic_crops
    from network.model import DeepfakeModel

    torch.manual_seed(seed)
    model = DeepfakeModel()
    crops = calib if calib is not None else synthetic_crops(48, seed=seed + 7)
    calibrate_untrained(model, normalize(crops))
    path = Path(outdir) / DEMO_NAME.format(seq_len=seq_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    log.info("wrote the untrained demo checkpoint %s", path)
    return path
