"""JSON that mbexport did not write itself: checkpoint configs, tokenizer files, export manifests, JSONL
lines. Every way such text can be unreadable is a ValueError, which each caller turns into its one-line
error naming the file.

The standard parser raises RecursionError on text nested deeper than about a thousand levels, and reading
a file whole holds all of it. Without these checks a hostile file could end a command with a traceback, or
fill memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 64 << 20  # config, tokenizer and manifest files are kilobytes, tokenizer.json a few MiB


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``; text nested too deeply for the parser is a ValueError like any other malformed JSON."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError("it is nested deeper than the JSON parser goes") from None


def read(path: str | Path) -> Any:
    """The JSON value of the UTF-8 file at ``path``: OSError when it cannot be read; ValueError when it is
    not JSON, not UTF-8, or over MAX_FILE_BYTES."""
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"the file is over {MAX_FILE_BYTES >> 20} MiB, more than any JSON config holds")
    return loads(data.decode("utf-8"))


def read_object(path: Path, error: type[Exception], fix: str) -> dict[str, Any]:
    """The JSON object in the file at ``path``; ``error`` (one line ending in ``fix``) when the file cannot be
    read, is not JSON, or holds something other than an object."""
    try:
        data = read(path)
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror}); {fix}") from None
    except ValueError as e:
        raise error(f"{path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data
