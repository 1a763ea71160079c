"""Loading `path/to/file.py:NAME` or `package.module:NAME` (a factory or a --call adapter)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable

from ..errors import InputError


def load_callable(spec: str, *, what: str) -> Callable:
    """The callable NAME of `spec`; InputError (one line) when the file, module or name is
    missing or importing it raises."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(None, f"{what} {spec!r}: give FILE.py:NAME or package.module:NAME")
    target, name = spec.rsplit(":", 1)
    if not name.isidentifier():
        raise InputError(None, f"{what} {spec!r}: {name!r} is not a Python name")
    try:
        if target.endswith(".py") or os.sep in target:
            if not os.path.isfile(target):
                raise InputError(target, "no such file")
            mod_name = f"gpt2v_module_{abs(hash(os.path.abspath(target)))}"
            mspec = importlib.util.spec_from_file_location(mod_name, target)
            module = importlib.util.module_from_spec(mspec)
            sys.modules[mod_name] = module  # dataclasses and pickling look modules up by name
            mspec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any error while importing the user's code is bad input
        raise InputError(target, f"importing it raised {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise InputError(target, f"has no {name!r}")
    if not callable(fn):
        raise InputError(target, f"{name!r} is a {type(fn).__name__}, not a callable")
    return fn
