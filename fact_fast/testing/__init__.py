"""The op-checking harness (``fact_fast.testing``): every fused backend of every op against the
reference, shared by the test suite (``tests/helpers/op_utils.py``), ``python -m fact_fast.selftest`` and
the benchmarks, so a backend passes the same bar in CI, on a user's machine and in a benchmark.

==============  ===================================================================================
``matrix``      what is checked: ops, fused backends, dtypes, cases (imports no fact_fast module)
``compare``     the comparisons: elementwise bound, the attention family's flash rule, exact, VQ index
``cases``       one check per op: inputs per case, forward and backward against the reference
``timing``      the timing loop (CUDA synchronised around each call)
``run``         one op × backend × dtype × case checked into a record; which backends can run
``environment`` what this machine has: versions, GPU, the compiled extension's architectures
==============  ===================================================================================

The tolerance tables are :mod:`fact_fast.ops.tolerances`. ``compare``, ``cases``, ``run`` and
``environment`` import :mod:`fact_fast.ops`, which imports Triton: under ``TRITON_INTERPRET=1``
set the variable before importing them (``fact_fast.selftest`` does).
"""
