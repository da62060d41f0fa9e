"""The ground every layer of deepfake-engine stands on, and which imports nothing above it.

It sits at the bottom (``core/``, beside the packages that use it, not inside the runtime):
``preprocess/``, ``weights/`` and ``network/`` import only this package, the runtime
(``engine/``), ``export/`` and ``benchmarks/`` build on it too. It holds only what several
layers need:

- :mod:`core.errors`: the one exception tree;
- :mod:`core.deps`: lazy imports of optional libraries, with errors naming the extra;
- :mod:`core.hashing`: file sha256 for caches and manifests;
- :mod:`core.paths`: the directories the engine reads and writes, and their variables;
- :mod:`core.config`: every option, its default and its allowed values (frozen
  dataclasses the CLI, the server and Ray are generated from);
- :mod:`core.sidecar`: the model sidecar (``classifier.json``), typed, read by the runtime,
  written by ``export/`` and ``dfe build``, and its crop style read by ``preprocess/``;
- :mod:`core.reduce`: per-video reduction of per-frame logits and the label rule (the
  runtime, INT8 evaluation and the export's parity check);
- :mod:`core.verdict`: the verdicts and reason codes (the runtime, ``preprocess.quality``);
- :mod:`core.classifier`: the exported classifier's contract: frames -> per-frame logits
  over any runner with ONNX Runtime's ``run(names, feeds)``;
- :mod:`core.onnx_session`: the one place ONNX Runtime sessions are created;
- :mod:`core.compute`: the CPU thread budget;
- :mod:`core.labels` and :mod:`core.metrics`: ``file,label`` files and the metrics of a
  labelled set, shared by ``dfe eval`` and ``dfe train``.

What only the runtime uses lives in the runtime: the record schema (:mod:`engine.records`),
provenance (:mod:`engine.provenance`), the allocator (:mod:`engine.allocator`), the Q/DQ
rewrite for ONNX Runtime's CPU kernels (:mod:`engine.backends.qdq_rewrite`).

Nothing here imports torch, TensorRT or ONNX Runtime at import time.
"""

__version__ = "0.1.0"
