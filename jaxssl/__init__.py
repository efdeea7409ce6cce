"""jaxssl: self-supervised learning in JAX/Flax.

Importing jaxssl keeps JAX from probing for a TPU on machines that have none
when libtpu is installed, sets XLA:CPU's fastest safe options, and, when
JAX will run on the CPU only, keeps freed memory in the heap (see
`jaxssl.platforms` and `jaxssl.host_memory`).
"""

from jaxssl import host_memory as _host_memory, platforms as _platforms

_platforms.default_cpu_xla_flags()
_platforms.default_platforms()
if _platforms.runs_on_cpu_only():
    _host_memory.keep_freed_memory()
