"""What ``dfe build`` makes: the INT8 Q/DQ graph (ONNX Runtime CPU and TensorRT) and TensorRT
engines with their cache. Nothing here imports TensorRT, CUDA or ONNX Runtime at import time."""
