"""Watch a download's flushes and renames with Debian's ``strace``, to check durable publishing.

``traced_download(provider, model, **kwargs)`` runs ``modelpull.download_model``
in a child Python under ``strace -f -y -e trace=fsync,fdatasync,rename,renameat,renameat2``
and returns the calls in order. ``assert_durable(calls, final)`` checks the one
order that survives a power cut: the file's bytes flushed (an fsync on the
file being renamed), then the rename to ``final``, then an fsync of the folder
holding ``final``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_FSYNC = re.compile(r"(?:fsync|fdatasync)\(\d+<(?P<path>[^>]*)>\)\s+=\s+0")
_RENAME = re.compile(r'rename(?:at2?)?\((?:[^,]+, )?"(?P<src>[^"]+)", (?:[^,]+, )?"(?P<dst>[^"]+)"[^)]*\)\s+=\s+0')


@dataclass(frozen=True)
class Call:
    kind: str  # "fsync" or "rename"
    path: str  # fsync: the file or folder; rename: the target
    source: str = ""  # rename: what was renamed


def strace_path() -> str:
    found = shutil.which("strace")
    if found is None:
        raise RuntimeError("strace is not installed (apt-get install strace); scripts/test installs it")
    return found


def traced_download(provider: str, model: str, **kwargs: Any) -> tuple[list[Call], dict[str, Any]]:
    """Run one download under strace; (calls in order, the last event as a dict)."""
    trace, last = strace_download("fsync,fdatasync,rename,renameat,renameat2", provider, model, **kwargs)
    return parse(trace), last


def strace_download(
    calls: str, provider: str, model: str, string_size: int = 4096, **kwargs: Any
) -> tuple[str, dict[str, Any]]:
    """Run one download in a child Python under ``strace -f -y -e trace=CALLS``; (the trace, last event)."""
    script = (
        "import asyncio, json, sys\n"
        "from modelpull import download_model\n"
        "async def main():\n"
        "    last = None\n"
        f"    async for event in download_model({provider!r}, {model!r}, **json.loads(sys.argv[1])):\n"
        "        last = event\n"
        "    print(json.dumps(last.to_dict()))\n"
        "asyncio.run(main())\n"
    )
    with tempfile.TemporaryDirectory(prefix="modelpull-strace-") as scratch:
        log = Path(scratch) / "trace.txt"
        out = subprocess.run(
            [strace_path(), "-f", "-y", "-qq", "-s", str(string_size), "-o", str(log),
             "-e", f"trace={calls}", sys.executable, "-c", script, json.dumps(kwargs)],
            capture_output=True, text=True, timeout=240, env=os.environ.copy(), check=False,
        )
        if out.returncode != 0:
            raise AssertionError(f"traced download failed:\n{out.stderr[-3000:]}")
        trace = log.read_text()
    return trace, json.loads(out.stdout.strip().splitlines()[-1])


def parse(trace: str) -> list[Call]:
    """Calls in the order they returned; a call split by another thread's is joined again."""
    calls: list[Call] = []
    pending: dict[str, str] = {}
    for line in trace.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.lstrip()  # strace pads short pids: "3573  <... rename resumed>"
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        if rest.startswith("<... ") and " resumed>" in rest:
            rest = pending.pop(pid, "") + rest.split(" resumed>", 1)[1]
        fsync = _FSYNC.search(rest)
        if fsync:
            calls.append(Call("fsync", os.path.normpath(fsync.group("path"))))
            continue
        rename = _RENAME.search(rest)
        if rename:
            calls.append(Call("rename", _abs(rename.group("dst")), _abs(rename.group("src"))))
    return calls


def _abs(path: str) -> str:
    return os.path.normpath(os.path.join(os.getcwd(), path))


def assert_durable(calls: list[Call], final: Path | str) -> None:
    """``final`` was renamed into place after its bytes were flushed, and its folder flushed after."""
    target = os.path.normpath(os.path.realpath(os.path.dirname(final)) + "/" + os.path.basename(final))
    renames = [i for i, c in enumerate(calls) if c.kind == "rename" and c.path == target]
    assert renames, f"{target} was never renamed into place; calls: {calls}"
    at = renames[-1]
    source = calls[at].source
    assert any(c.kind == "fsync" and c.path == source for c in calls[:at]), (
        f"{source} was renamed to {target} before its bytes were flushed: {calls[:at + 1]}"
    )
    folder = os.path.dirname(target)
    assert any(c.kind == "fsync" and c.path == folder for c in calls[at + 1:]), (
        f"the folder {folder} was not flushed after {target} got its name: {calls[at:]}"
    )
