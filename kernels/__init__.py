"""Triton kernels, one module per op family. They know tensors, not models.

Import them lazily (only when a Triton backend runs): under ``TRITON_INTERPRET=1`` the variable
must be set before the first kernel module is imported.
"""
