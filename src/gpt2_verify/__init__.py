"""gpt2-verify's one import root.

The repository keeps its three folders at the top (`reference/`: the numpy-only llm.c-exact
init; `verify/`: formats, comparators, numerics, CLI; `golden/`: golden records), and the
build installs them under this package (`[tool.setuptools.package-dir]` in pyproject.toml):

    gpt2_verify.reference   gpt2_verify.verify   gpt2_verify.golden

so nothing generic (`reference`, `verify`, `golden` are PyPI and research-repo names) lands at
the top of site-packages. This module imports nothing: pytest loads `gpt2_verify.plugin` in
every project where the package is installed.
"""

__version__ = "0.1.0"
