"""Test-wide setup shared by tests/ and bench/.

Without CUDA, Triton kernels can only run in Triton's interpreter, which must be switched on before any
kernel is decorated; `kernels/__init__.py` does this, so importing it here is enough.
"""
import kernels  # noqa: F401  (sets TRITON_INTERPRET=1 on machines without CUDA)
