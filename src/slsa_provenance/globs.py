"""PURE: path globs, one rule set for subjects, refs and builder ids.

    >>> bool(glob_regex("refs/heads/release/*").match("refs/heads/release/1.0"))
    True
    >>> bool(glob_regex("refs/heads/release/*").match("refs/heads/release/1.0/feature"))
    False
    >>> bool(glob_regex("refs/heads/**").match("refs/heads/release/1.0/feature"))
    True

`*` and `?` stay within one `/`-separated segment, `**` crosses segments but never a `..` segment
(`refs/tags/**` must not reach `refs/tags/v1/../../heads/evil`), `[a-z]` and `[!a-z]` are classes
that never match `/`; everything else is literal. The whole text must match, and a pattern with
any wildcard never matches a text that holds a `..` segment (`refs/tags/*/**` must not reach
`refs/tags/../heads/evil` either).
"""

from __future__ import annotations

import re

_NO_DOTDOT = r"(?!(?:[^/]*/)*\.\.(?:/|\Z))"
"""Where `**` starts: no `..` segment follows (fail closed even when the pattern spells one later)."""


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile `pattern` to a regular expression that matches whole texts."""
    out: list[str] = []
    if any(c in pattern for c in "*?["):  # a wildcard could cover a `..` segment: fail closed
        out.append(_NO_DOTDOT)
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append(f"{_NO_DOTDOT}(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(f"{_NO_DOTDOT}.*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body[0] in "!^"
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def matches(pattern: str, text: str) -> bool:
    return glob_regex(pattern).match(text) is not None
