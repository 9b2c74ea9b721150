"""PURE: parse JSON from untrusted sources without letting its nesting reach the interpreter's limit.

    >>> loads(b'{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> loads(b"[" * 10_000 + b"]" * 10_000)
    Traceback (most recent call last):
    ValueError: JSON nested deeper than 64 levels

json.loads of deeply nested input raises RecursionError only once the stack is at Python's limit,
where any other code (a finaliser, a logging call) fails too. The depth is measured first, at C
speed, on the decoded text re-encoded as UTF-8 (the input may be UTF-16 or -32, as json.loads
detects it, where a character's byte can look like a quote and hide brackets): strings are
blanked, everything but brackets dropped, then innermost pairs removed level by level.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def loads(data: bytes | str) -> Any:
    """json.loads, refusing nesting deeper than MAX_DEPTH. Raises ValueError for anything not JSON
    (UnicodeDecodeError included)."""
    if isinstance(data, bytes) and json.detect_encoding(data) != "utf-8":
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    # In UTF-8 no byte of a multi-byte character looks like a quote or a bracket.
    utf8 = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    brackets = _STRING.sub(b"", utf8).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not brackets:
            break
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    else:
        if brackets:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(data)
