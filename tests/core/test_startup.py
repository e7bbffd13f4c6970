"""Start-up: a command imports only what it needs.

``modelpull --help`` and ``modelpull list`` open no connection, so they must not
pay for aiohttp (its import alone is most of the 0.25 s start-up budget) or for
the push machinery. Each case runs a real interpreter and reads ``sys.modules``
after the command ran; the time itself is measured in ``bench/``, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = r"""
import json, sys
from modelpull.cli import main
sys.argv = ["modelpull", *{args!r}]
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in ("aiohttp", "modelpull._push", "fastapi", "uvicorn", "huggingface_hub", "rich")
               if m in sys.modules)
print("\n@@" + json.dumps(heavy), file=sys.stderr)
"""


def _imported_by(*args: str, env: dict[str, str] | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(args=list(args))],
        capture_output=True, text=True, timeout=60, env=env,
    )
    marker = done.stderr.rsplit("@@", 1)
    assert len(marker) == 2, done.stderr
    return list(json.loads(marker[1]))


def _python(code: str) -> list[str]:
    """What a fresh interpreter running ``code`` prints, word by word."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("args", [["--help"], ["pull", "--help"], ["push", "--help"], ["--version"]])
def test_help_imports_no_network_stack(args: list[str]) -> None:
    assert _imported_by(*args) == []


def test_the_library_names_cost_nothing_until_used() -> None:
    probe = (
        "import sys, modelpull\n"
        "before = 'aiohttp' in sys.modules or 'modelpull.api' in sys.modules\n"
        "modelpull.download_model\n"
        "print(before, 'modelpull.api' in sys.modules, callable(modelpull.push), sorted(modelpull.__all__) == "
        "sorted(n for n in dir(modelpull) if n in modelpull.__all__))\n"
    )
    assert _python(probe) == ["False", "True", "True", "True"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    import modelpull

    with pytest.raises(AttributeError, match="no_such_name"):
        modelpull.no_such_name  # noqa: B018


def test_a_lazy_module_imports_on_first_read_and_is_the_module_after() -> None:
    probe = (
        "import sys\n"
        "from modelpull._lazy import lazy\n"
        "c = lazy('colorsys')\n"
        "before = 'colorsys' in sys.modules\n"
        "import colorsys\n"
        "print(before, c.rgb_to_hsv is colorsys.rgb_to_hsv, c.__name__, c.__file__ == colorsys.__file__)\n"
    )
    assert _python(probe) == ["False", "True", "colorsys", "True"]
