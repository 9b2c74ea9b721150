"""Azure Pipelines logging commands (`##vso[...]`), escaped the way the agent unescapes them.

    >>> command("task.setvariable", "a%b", variable="out;x")
    '##vso[task.setvariable variable=out%3Bx]a%AZP25b'
    >>> neutralize("evil ##vso[task.complete result=Succeeded]")
    'evil ##vso\u200b[task.complete result=Succeeded]'

Every `##vso` line the package prints goes through this module. Untrusted text (file names,
branch names, server answers) is passed through `neutralize` before it is printed anywhere.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Mapping
from typing import TextIO

_PROPERTY_ESCAPES = (("%", "%AZP25"), ("\r", "%0D"), ("\n", "%0A"), ("]", "%5D"), (";", "%3B"))
_MESSAGE_ESCAPES = _PROPERTY_ESCAPES[:3]


def _escape(text: str, table: tuple[tuple[str, str], ...]) -> str:
    for raw, encoded in table:
        text = text.replace(raw, encoded)
    return text


def utf8_output() -> None:
    """Write stdout and stderr as UTF-8, whatever the console code page or locale.

    On Windows a piped stdout gets the ANSI code page (cp1252): a file named `app-中文.txt` ended the
    step in UnicodeEncodeError after its provenance was written. The agent reads a Node task's output
    (which Python inherits) as UTF-8. Names that are not valid text (undecodable bytes on Linux) print
    with backslash escapes rather than fail.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")


def neutralize(text: str) -> str:
    """Break every `##vso[` and `##[` so that printed text cannot become a command."""
    return text.replace("##vso[", "##vso\u200b[").replace("##[", "##\u200b[")


def command(name: str, message: str = "", /, **properties: str) -> str:
    props = ";".join(f"{key}={_escape(value, _PROPERTY_ESCAPES)}" for key, value in properties.items())
    return f"##vso[{name}{' ' + props if props else ''}]{_escape(neutralize(message), _MESSAGE_ESCAPES)}"


def emit(name: str, message: str = "", /, *, stream: TextIO | None = None, **properties: str) -> None:
    print(command(name, message, **properties), file=stream or sys.stdout, flush=True)


def under_agent(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether an Azure Pipelines agent reads this process's output: `TF_BUILD` is `True` (a name any
    shell or other CI can set) and the agent's SystemVssConnection URL is there too, which the agent
    hands every task and, through azure-pipelines-task-lib, every script step's process."""
    return (
        environ.get("TF_BUILD", "").lower() == "true"
        and environ.get("ENDPOINT_URL_SYSTEMVSSCONNECTION", "").strip() != ""
    )


def set_secret(value: str) -> None:
    """Mask `value` in every later log line of the agent. Multi-line values are masked line by line.
    Outside an agent nothing is printed: there `task.setsecret` would only show the secret."""
    if not under_agent():
        return
    for line in value.splitlines():
        if line.strip():
            emit("task.setsecret", line)
