"""The ResNeXt50 + LSTM deepfake classifier: the faithful reference and the export graphs.

``DeepfakeModel`` reproduces the original project's ``Model`` exactly, including its LSTM call
``nn.LSTM(2048, 2048, 1, False)``, where the positional ``False`` lands on ``bias``. With
``batch_first=False`` and one video of shape (1, seq, 2048), the LSTM reads the frames as its
*batch*: every frame gets one step from a zero state, independently of the others.

The export graphs put every frame of every video in one batch axis:

* ``FrameClassifier`` (variant ``original``): CNN, pooled features, the single LSTM step folded to
  the three gates that matter (with a zero state, the forget gate and ``W_hh`` never contribute:
  ``h = sigmoid(o) * tanh(sigmoid(i) * tanh(g))`` from ``W_ih x``), then ``linear1``. It returns
  per-frame logits; because ``linear1`` is affine, the video's logits under ``reduce=mean``
  (mean of LSTM outputs, then ``linear1``) equal the mean of its per-frame logits, and under
  ``reduce=last`` the logits of its last frame. The runtime does that reduction per video.
* ``FeatureExtractor`` + ``SequenceHead`` (variant ``sequence``, a retrained model with a real
  ``batch_first=True`` LSTM over frames): the CNN runs on the shared frame batch, the LSTM over
  each video's feature sequence (padded at the end, which a causal LSTM ignores), returning
  per-step logits that the runtime reduces the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from core.config import REDUCE_MODES

LATENT_DIM = 2048
HIDDEN_DIM = 2048
NUM_CLASSES = 2


@dataclass(frozen=True)
class Architecture:
    """Which flavour of the model a checkpoint holds.

    ``variant``: ``original`` (frames are the LSTM's batch, one step each: the published
    checkpoints) or ``sequence`` (``batch_first=True``, a real recurrence over a video's frames).
    ``lstm_bias``: whether the checkpoint has ``lstm.bias_ih_l0`` / ``lstm.bias_hh_l0``.
    """

    variant: str = "original"
    lstm_bias: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown variant {self.variant!r}; supported values are {', '.join(VARIANTS)}"
            )

    @property
    def batch_first(self) -> bool:
        return self.variant == "sequence"


VARIANTS = ("original", "sequence")


def _trunk() -> nn.Sequential:
    # weights=None: the checkpoint overwrites everything, and nothing may be downloaded here.
    backbone = torchvision.models.resnext50_32x4d(weights=None)
    return nn.Sequential(*list(backbone.children())[:-2])


class DeepfakeModel(nn.Module):
    """The original ``Model(2)``, forward included, for reference runs and checkpoint loading."""

    def __init__(self, arch: Architecture | None = None) -> None:
        super().__init__()
        arch = arch or Architecture()
        self.arch = arch
        self.model = _trunk()
        # Positional arguments as in the original: (input, hidden, layers, bias).
        self.lstm = nn.LSTM(LATENT_DIM, HIDDEN_DIM, 1, arch.lstm_bias, batch_first=arch.batch_first)
        self.relu = nn.LeakyReLU()  # defined and never used, as in the original
        self.dp = nn.Dropout(0.4)
        self.linear1 = nn.Linear(HIDDEN_DIM, NUM_CLASSES)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def lstm_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, seq, 3, H, W) -> (fmap, LSTM outputs of shape (batch, seq, 2048))."""
        batch_size, seq_length, c, h, w = x.shape
        x = x.view(batch_size * seq_length, c, h, w)
        fmap = self.model(x)
        x = self.avgpool(fmap)
        x = x.view(batch_size, seq_length, LATENT_DIM)
        x_lstm, _ = self.lstm(x, None)
        return fmap, x_lstm

    def forward(self, x: torch.Tensor, reduce: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (fmap, logits) like the original; ``reduce`` picks training's mean or the app's
        last-frame reduction (``x_lstm[:, -1, :]``)."""
        fmap, x_lstm = self.lstm_outputs(x)
        reduced = reduce_lstm(x_lstm, reduce)
        return fmap, self.dp(self.linear1(reduced))


def reduce_lstm(x_lstm: torch.Tensor, reduce: str) -> torch.Tensor:
    """(videos, frames, hidden) LSTM outputs -> (videos, hidden): their mean over the frames
    (``reduce="mean"``, training's) or the last frame's (``"last"``, the original app's).
    Raises ValueError for another mode (:data:`core.config.REDUCE_MODES`)."""
    if reduce == "mean":
        return torch.mean(x_lstm, dim=1)
    if reduce == "last":
        return x_lstm[:, -1, :]
    raise ValueError(
        f"unknown reduce mode {reduce!r}; supported values are {', '.join(REDUCE_MODES)}"
    )


def _pooled(trunk: nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (N, 2048), last conv feature map (N, 2048, 4, 4) at 112x112)."""
    fmap = trunk(frames)
    return torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1), fmap


class FrameClassifier(nn.Module):
    """Export graph of the ``original`` variant: frames (N, 3, 112, 112) -> per-frame logits
    (N, 2), pooled features (N, 2048) and the last conv feature map (N, 2048, 4, 4). ``N``
    mixes frames of any number of videos."""

    def __init__(self, model: DeepfakeModel) -> None:
        super().__init__()
        if model.arch.variant != "original":
            raise ValueError("FrameClassifier folds the original variant's one-step LSTM only")
        self.trunk = model.model
        w_ih = model.lstm.weight_ih_l0.detach()
        hid = HIDDEN_DIM
        # PyTorch's gate order is (i, f, g, o); keep i, g, o.
        keep = torch.cat([w_ih[0:hid], w_ih[2 * hid : 3 * hid], w_ih[3 * hid : 4 * hid]])
        self.gates = nn.Linear(LATENT_DIM, 3 * hid, bias=model.arch.lstm_bias)
        with torch.no_grad():
            self.gates.weight.copy_(keep)
            if model.arch.lstm_bias:
                b = (model.lstm.bias_ih_l0 + model.lstm.bias_hh_l0).detach()
                self.gates.bias.copy_(torch.cat([b[0:hid], b[2 * hid : 3 * hid], b[3 * hid :]]))
        self.linear1 = model.linear1

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, features, fmap); ``fmap`` is the optional output ``dfe explain`` reads (ONNX
        Runtime computes it anyway, as the input of the pooling)."""
        features, fmap = _pooled(self.trunk, frames)
        i, g, o = self.gates(features).chunk(3, dim=1)
        h = torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g))
        return self.linear1(h), features, fmap


class FeatureExtractor(nn.Module):
    """Export graph of the ``sequence`` variant's CNN: frames (N, 3, 112, 112) -> (N, 2048)."""

    def __init__(self, model: DeepfakeModel) -> None:
        super().__init__()
        self.trunk = model.model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, fmap)."""
        return _pooled(self.trunk, frames)


class SequenceHead(nn.Module):
    """Export graph of the ``sequence`` variant's head: features (B, T, 2048) -> per-step logits
    (B, T, 2). Videos shorter than T are zero-padded at the end; the LSTM is causal, so the steps
    before the padding are exact."""

    def __init__(self, model: DeepfakeModel) -> None:
        super().__init__()
        if not model.arch.batch_first:
            raise ValueError("SequenceHead is for the sequence variant (batch_first=True)")
        self.lstm = model.lstm
        self.linear1 = model.linear1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Initial state shaped from the input, so the exporter keeps the batch axis dynamic.
        zeros = torch.zeros_like(features[:, 0, :]).unsqueeze(0)
        out, _ = self.lstm(features, (zeros, zeros))
        return self.linear1(out)
