"""The one compiled part: the int8 scan kernel (embeddings/index/int8dot.c).

Everything else is configured in pyproject.toml. The extension is optional: without a C
compiler the install still succeeds and the scan falls back to NumKong (embeddings/index/scan.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "embeddings.index.int8dot",
            ["embeddings/index/int8dot.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
