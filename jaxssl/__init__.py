"""jaxssl: self-supervised learning in JAX/Flax.

Importing jaxssl keeps JAX from probing for a TPU on machines that have none
when libtpu is installed, and sets XLA:CPU's fastest safe options (see
`jaxssl.platforms`).
"""

from jaxssl import platforms as _platforms

_platforms.default_cpu_xla_flags()
_platforms.default_platforms()
