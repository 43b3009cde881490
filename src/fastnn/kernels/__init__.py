"""Kernel twins: `ref/<family>.py` (the NumPy reference, the specification) beside the
compiled `_<family>.pyx` (same functions, same signatures), and the activation table
(`activation_table`) both read.

Shared by the compiled modules: `_common` (the OpenMP team dispatch, the fast exp,
branch-free selects), `_blas` (the one row-major GEMM wrapper), `_buffers` (the C-level
array checks every wrapper makes), `_reduce` (deterministic sums), `_plan` (recorded
kernel programs). `fastnn.core.backend` registers every kernel per operation.
Kernels trust their inputs' values: `fastnn.ops` and the layers validate shapes,
dtypes, contiguity and label ranges before calling them; the compiled wrappers check
shapes, dtypes and layouts once more in C, so a bad call raises and never reads out of
bounds.
"""
