"""Reading the JSON records gpt2-verify writes (report inputs, bench --merge): one-line errors
naming the file, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import InputError


def load_json(path: str | os.PathLike) -> dict:
    """The JSON object in `path`; InputError for a missing or unreadable file, text that is not
    JSON, or JSON that is not an object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise InputError(path, "not valid JSON: not UTF-8 text") from None
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from None
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise InputError(path, f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InputError(path, f'a JSON {type(obj).__name__}, not a gpt2-verify record (a JSON object with '
                               'a "schema" field)')
    return obj
