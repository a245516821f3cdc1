"""fact_fast: FACT for multi-label medical image diagnosis, with fused kernels for its four ops."""
__version__ = "0.1.0"
