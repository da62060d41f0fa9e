"""A pytest plugin that hides torch, as in an environment installed without the ``export``
extra: ``python -m pytest -p tests.hide_torch`` (used by ``tests/test_layering.py``)."""

from __future__ import annotations

import importlib.abc
import sys

HIDDEN = ("torch", "torchvision", "onnx2torch")


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by tests.hide_torch)")
        return None


for _name in [m for m in sys.modules if m.split(".")[0] in HIDDEN]:
    del sys.modules[_name]
sys.meta_path.insert(0, _Hide())
