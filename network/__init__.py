"""The network: the ResNeXt50 + LSTM classifier in PyTorch (:mod:`network.model`) and its
training checkpoints (:mod:`network.checkpoint`).

Below the runtime and ``export/``: the ``torch`` backend runs a checkpoint with it, ``export/``
exports and trains it. It needs torch (the ``export`` extra), which only these modules import at
module level; importing this package alone imports nothing heavy.
"""
