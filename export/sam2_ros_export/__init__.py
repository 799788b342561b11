"""sam2_ros export toolchain: official SAM 2 / 2.1 checkpoints -> ONNX graphs + manifest.

Needs PyTorch and the official ``sam2`` package; the runtime in ``sam2_ros`` does not. It builds
on the runtime (the graph contract, the PyTorch graph modules of the torch backend), never the
other way round. Also here: the official predictor as the reference of parity runs, the CPU
benchmark and the FLOP counter.
"""
