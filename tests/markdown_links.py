"""Markdown as GitHub renders it, for the link tests: the anchors its headings get, and the links a page
makes (outside code, where nothing is a link).

    >>> slug("The `verify` command: checks (1)-(11)")
    'the-verify-command-checks-1-11'
"""

from __future__ import annotations

import re

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", flags=re.DOTALL)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", flags=re.MULTILINE)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_ANCHOR = re.compile(r"""<a\s+(?:name|id)=["']([^"']+)["']""")


def without_code(markdown: str) -> str:
    """The text with fenced blocks emptied (their lines kept) and inline code removed."""
    emptied = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), markdown)
    return INLINE_CODE.sub("", emptied)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped (a link keeps its text), lower
    case, every character but letters, digits, `_`, `-` and spaces removed, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def heading_slugs(markdown: str) -> list[str]:
    """Every anchor the page has, in order: headings (a repeated one gets -1, -2, ...) and HTML anchors."""
    slugs: list[str] = []
    seen: dict[str, int] = {}
    fenced = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), markdown)
    for match in HEADING.finditer(fenced):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        slugs.append(base if count == 0 else f"{base}-{count}")
    return slugs + HTML_ANCHOR.findall(fenced)


def link_targets(markdown: str) -> list[str]:
    """The target of every inline link and image of the page, as written."""
    return [match.group(1) for match in LINK.finditer(without_code(markdown))]
