"""The shared base every other package builds on, and which imports nothing above it.

``preprocess/``, ``weights/`` and ``export/`` import only this package (and never the runtime,
its backends, the CLI or the apps); the runtime composes what they provide. What lives here:

- :mod:`engine.core.errors`: the one exception tree;
- :mod:`engine.core.deps`: lazy imports of optional libraries, with errors naming the extra;
- :mod:`engine.core.hashing`: file sha256 for caches and manifests;
- :mod:`engine.core.paths`: the directories the engine reads and writes, and their variables;
- :mod:`engine.core.config`: every option, its default and its allowed values (frozen
  dataclasses the CLI, the server and Ray are generated from);
- :mod:`engine.core.records`: the per-video result (:class:`~engine.core.records.Prediction`)
  and the record schema every writer derives from;
- :mod:`engine.core.sidecar`: the model sidecar (``classifier.json``) schema;
- :mod:`engine.core.reduce`: per-video reduction of per-frame logits and the label rule;
- :mod:`engine.core.classifier`: the exported classifier's contract: frames -> per-frame logits
  over any runner with ONNX Runtime's ``run(names, feeds)``;
- :mod:`engine.core.onnx_session`: the one place ONNX Runtime sessions are created;
- :mod:`engine.core.labels` and :mod:`engine.core.metrics`: ``file,label`` files and the
  metrics of a labelled set, shared by ``dfe eval`` and ``dfe train``.

Nothing here imports torch, TensorRT or ONNX Runtime at import time.
"""

__version__ = "0.1.0"
