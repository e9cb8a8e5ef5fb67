"""Builds the compiled OTLP span decoder (isostack/sources/otlp/_wire.pyx); everything else is in pyproject.toml.

Without a C compiler or Cython the package still works: isostack.sources.otlp.wire falls back to the
pure-Python decoder (tests/test_otlp_wire.py asserts the extension is built where CI runs).
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("isostack.sources.otlp._wire", ["isostack/sources/otlp/_wire.pyx"], extra_compile_args=["-O2"])],
        language_level=3,
    ),
)
