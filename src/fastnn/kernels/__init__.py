"""Kernel twins: `ref` (readable reference) and the compiled Cython modules.

Both expose the same functions with the same signatures (see `ref/__init__.py`).
Kernels trust their inputs: `fastnn.ops` and the layers validate shapes, dtypes,
contiguity and label ranges before calling them.
"""
