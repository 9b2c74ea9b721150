"""PURE: parse JSON from untrusted sources without letting its nesting reach the interpreter's limit.

    >>> loads(b'{"a": [1, 2]}')
    {'a': [1, 2]}
    >>> loads(b"[" * 10_000 + b"]" * 10_000)
    Traceback (most recent call last):
    ValueError: JSON nested deeper than 64 levels

json.loads of deeply nested input raises RecursionError only once the stack is at Python's limit,
where any other code (a finaliser, a logging call) fails too. The depth is measured first, at C
speed, on the decoded text re-encoded as UTF-8 (the input may be UTF-16 or -32, as json.loads
detects it, where a character's byte can look like a quote and hide brackets): escaped backslashes
and quotes are dropped (pairing from the left, as the JSON lexer does), everything but quotes,
brackets and colons dropped, strings blanked, then innermost pairs removed level by level.

`strict` also refuses what parsers disagree on, so that no other verifier reads a signed document
differently: a key given twice (Python keeps the last, some parsers the first), NaN, Infinity,
numbers too large for a double and lone surrogates (escaped, or encoded as bytes). A key given
twice is found by counting: every colon outside a string separates one key from its value, so the
keys parsed fall short of the colons only when a key repeats (only then is the document parsed
again, to name it). That keeps a 100,000-subject Statement as fast to read strictly as json.loads
alone.
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain
from typing import Any

MAX_DEPTH = 64
_DROPPED = bytes(b for b in range(256) if b not in b'"[]{}:')


class AmbiguousError(ValueError):
    """JSON that parsers read differently (strict mode)."""


def loads(data: bytes | str, *, strict: bool = False) -> Any:
    """json.loads, refusing nesting deeper than MAX_DEPTH (and, `strict`, what parsers disagree on).
    Raises ValueError for anything not JSON (UnicodeDecodeError included), AmbiguousError
    (a ValueError) for what `strict` refuses."""
    if isinstance(data, bytes) and json.detect_encoding(data) != "utf-8":
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    # In UTF-8 no byte of a multi-byte character looks like a quote, a backslash or a bracket.
    utf8 = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    unescaped = utf8.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in utf8 else utf8
    outside = b"".join(unescaped.translate(None, _DROPPED).split(b'"')[::2])  # brackets and colons
    brackets = outside.replace(b":", b"")
    for _ in range(MAX_DEPTH):
        if not brackets:
            break
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    else:
        if brackets:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if not strict:
        return json.loads(data)
    _refuse_surrogates(utf8)
    document = json.loads(data, parse_constant=_refuse, parse_float=_finite)
    if _pairs(document) != outside.count(b":"):  # a key repeats: parse again to name it
        json.loads(data, object_pairs_hook=_unique, parse_constant=_refuse, parse_float=_finite)
        raise AmbiguousError("its keys and the colons that separate them do not add up")
    return document


_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_surrogates(utf8: bytes) -> None:
    """A lone surrogate, escaped or encoded as bytes (json.loads keeps both, Go reads U+FFFD, others
    refuse). Escaped backslashes become two spaces, so every `\\u` left starts an escape and two
    escapes are adjacent only when nothing is between them."""
    try:
        utf8.decode("utf-8")
    except UnicodeDecodeError as exc:
        utf8.decode("utf-8", "surrogatepass")  # not UTF-8 at all: UnicodeDecodeError, not JSON
        raise AmbiguousError("a surrogate is encoded as bytes, which UTF-8 does not allow") from exc
    if b"\\ud" not in utf8 and b"\\uD" not in utf8:
        return
    unescaped = utf8.replace(b"\\\\", b"  ")
    high_ended = -1  # where the last high surrogate escape ended, if a low one must follow there
    for escape in _SURROGATE.finditer(unescaped):
        low, paired = escape.group()[3:4].lower() in b"cdef", escape.start() == high_ended
        if (high_ended != -1 and not (paired and low)) or (low and not paired):
            raise AmbiguousError(f"a surrogate escape lacks its pair (at {escape.group().decode()})")
        high_ended = -1 if low else escape.end()
    if high_ended != -1:
        raise AmbiguousError("a surrogate escape lacks its pair (at the end)")


def _pairs(document: Any) -> int:
    """How many key-value pairs the objects of `document` (as json.loads builds it) hold, all
    levels; a level at a time, at C speed where it can be."""
    count, level = 0, [document]
    while level:
        objects = [value for value in level if type(value) is dict]
        count += sum(map(len, objects))
        inner = chain(
            chain.from_iterable(map(dict.values, objects)),
            chain.from_iterable(value for value in level if type(value) is list),
        )
        level = [value for value in inner if type(value) in (dict, list)]
    return count


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) == len(pairs):
        return document
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise AmbiguousError(f"key {key!r} is given twice")
        seen.add(key)
    raise AssertionError("unreachable")


def _refuse(constant: str) -> Any:
    raise AmbiguousError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise AmbiguousError(f"the number {text[:20]} is too large for a double")
    return number
