"""`modelpull pull` as a person sees it: on a terminal (a pty), piped into a log, and on Ctrl-C.

Real servers on loopback (olah behind hf_front, the Ollama emulator); the CLI runs as its own
process. On a pty the terminal is 80 columns wide, as a fresh terminal window is.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.core.test_hf_contract import MB, random_bytes

MODELPULL = [sys.executable, "-m", "modelpull.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """``modelpull ARGS`` on a pseudo-terminal of ``columns`` x 24; its output read as it comes."""

    def __init__(self, *args: str, columns: int = 80, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a terminal of its own
            for key, value in (env or {}).items():
                os.environ[key] = value
            os.environ.pop("COLUMNS", None)
            os.environ["TERM"] = "xterm-256color"
            os.execv(sys.executable, [*MODELPULL, *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.status: int | None = None

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def text(self) -> str:
        """What was printed, escape sequences and carriage returns left out."""
        with self._lock:
            return ANSI.sub("", self._raw.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never shown; the terminal shows:\n{self.text[-3000:]}")

    def ctrl_c(self) -> None:
        """What pressing Ctrl-C does: the terminal sends SIGINT to the foreground process group."""
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reader.join(5)
                os.close(self.fd)
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("modelpull did not exit; it printed:\n" + self.text[-3000:])


@pytest.fixture
def repo(olah):
    repo_id = f"org/term-{uuid.uuid4().hex[:8]}"
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": random_bytes(3 * MB, repo_id)}
    olah.make_repo(repo_id, files)
    return repo_id


def _pull(repo_id: str, endpoint: str, cache: Path, *extra: str) -> tuple[str, ...]:
    return ("pull", "hf", repo_id, "--base-url", endpoint, "--cache-dir", str(cache), *extra)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def test_a_message_with_brackets_is_printed_as_written_with_its_code(ollama_emulator, olah, hf_front, tmp_path):
    ollama_emulator.add_model("brackets:1b", [400_000], bytes_per_sec=10 * MB)
    ollama_emulator.fail_after("brackets:1b", 1000, error="pull [bold]layer[/bold] failed: [red]x[/] [gated]")
    term = Terminal("pull", "ollama", "brackets:1b", "--base-url", ollama_emulator.base_url)
    assert term.wait() == 1
    assert "error [server_error]: Ollama: pull [bold]layer[/bold] failed: [red]x[/] [gated]" in term.text

    repo_id = f"org/gated-{uuid.uuid4().hex[:6]}"
    olah.make_repo(repo_id, {"config.json": b"{}"})
    hf_front.gate(repo_id)
    term = Terminal(*_pull(repo_id, hf_front.endpoint, tmp_path))
    assert term.wait() == 1
    flat = " ".join(term.text.split())  # the terminal wraps at 80 columns
    assert f"error [gated]: {repo_id} is gated: request access on {hf_front.endpoint}/{repo_id}" in flat
    assert "Starting download" not in flat  # an error before the plan is the error alone


def test_the_plan_line_a_bar_then_the_summary(hf_front, repo, tmp_path):
    hf_front.throttle(1 * MB, repo_id=repo, path="model.safetensors")
    term = Terminal(*_pull(repo, hf_front.endpoint, tmp_path))
    term.wait_for(rf"Downloading {repo} from huggingface: 2 files, 3\.0 MB")
    term.wait_for(r"downloading .*/3\.0 MB")  # the bar, with the library's speed
    assert term.wait() == 0, term.text
    text = term.text
    assert re.search(r"[0-9.]+ [kM]B/s", text)
    assert re.search(r"\d+s left", text), "no time left shown while 3 MB took 3 s"
    assert f"✓ Downloaded {repo} to " in text
    assert re.search(r"3\.0 MB fetched in [0-9.]+s, [0-9.]+ [kM]B/s on average", text)
    assert "?" not in text


def test_ctrl_c_keeps_the_partial_says_so_and_the_rerun_resumes(hf_front, repo, tmp_path):
    hf_front.throttle(400_000, repo_id=repo, path="model.safetensors")
    term = Terminal(*_pull(repo, hf_front.endpoint, tmp_path))
    term.wait_for(r"downloading .*[0-9.]+/3\.0 MB")
    time.sleep(1.5)
    term.ctrl_c()
    assert term.wait(20) == 130
    text = term.text
    interrupted = re.search(r"Interrupted: ([0-9.]+ [kM]B) of 3\.0 MB is on disk and kept; run the same command "
                            r"again to resume from there\.", " ".join(text.split()))
    assert interrupted, text
    assert "Aborted" not in text and "Traceback" not in text
    partials = list(tmp_path.rglob("*.incomplete"))
    assert partials and partials[0].stat().st_size > 100_000, "the partial was not kept"

    hf_front.clear_rules()
    hf_front.clear_log()
    term = Terminal(*_pull(repo, hf_front.endpoint, tmp_path))
    resumed = term.wait_for(r"Resuming: ([0-9.]+ [kM]B) of 3\.0 MB already on disk, fetching the other")
    assert term.wait() == 0, term.text
    assert float(resumed.group(1).split()[0]) > 0
    sent = hf_front.file_bytes_sent(repo, "model.safetensors")
    assert sent < 3 * MB - 100_000, f"the rerun fetched {sent} bytes of 3 MB again"

    term = Terminal(*_pull(repo, hf_front.endpoint, tmp_path))
    assert term.wait() == 0
    flat = " ".join(term.text.split())
    assert f"✓ {repo} is already complete, nothing to fetch: " in flat
    assert "?" not in flat and "fetched in" not in flat


def test_ctrl_c_with_json_ends_with_a_cancelled_error_event(hf_front, repo, tmp_path):
    hf_front.throttle(300_000, repo_id=repo, path="model.safetensors")
    proc = subprocess.Popen([*MODELPULL, *_pull(repo, hf_front.endpoint, tmp_path, "--json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["status"] == "downloading" and (events[-1]["downloaded_bytes"] or 0) > 300_000:
            proc.send_signal(signal.SIGINT)
            break
    rest, err = proc.communicate(timeout=20)
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    last = events[-1]
    assert last["status"] == "error" and last["error_code"] == "cancelled"
    assert last["downloaded_bytes"] >= 300_000 and last["total_bytes"] == 3 * MB + 23
    assert "run the same command again to resume" in last["message"]
    assert [e["status"] for e in events].count("error") == 1


def test_piped_output_is_whole_lines_with_progress_every_few_seconds(hf_front, olah, tmp_path):
    # a long name, so the path is longer than 80 columns
    repo_id = f"org/piped-{uuid.uuid4().hex[:8]}-with-a-name-long-enough-to-pass-eighty-columns"
    olah.make_repo(repo_id, {"config.json": b"{}", "model.safetensors": random_bytes(4 * MB, repo_id)})
    hf_front.throttle(500_000, repo_id=repo_id, path="model.safetensors")
    started = time.monotonic()
    out = subprocess.run([*MODELPULL, *_pull(repo_id, hf_front.endpoint, tmp_path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    lines = _lines(out.stdout)
    assert lines[0] == f"Downloading {repo_id} from huggingface: 2 files, 4.0 MB"
    progress = [line for line in lines if line.startswith("downloading ")]
    assert len(progress) >= 2, lines  # 8 s of transfer, a line every 3 s
    assert len(progress) <= took / 3 + 1
    for line in progress:
        assert re.fullmatch(r"downloading [0-9.]+ [kM]?B / 4\.0 MB \([0-9.]+%\) at [0-9.]+ [kM]B/s"
                            r"(, \d+s left)?: model\.safetensors", line), line
    done = [line for line in lines if line.startswith("Downloaded ")]
    assert len(done) == 1 and done[0].endswith(str(next(tmp_path.rglob("snapshots/*")))), lines
    assert len(done[0]) > 80  # not wrapped, not cut
    assert "\x1b" not in out.stdout + out.stderr  # no colours or cursor moves in a log

    dry = subprocess.run([*MODELPULL, *_pull(repo_id, hf_front.endpoint, tmp_path, "--dry-run")],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert dry.returncode == 0, dry.stderr
    assert f"destination: {next(tmp_path.rglob('snapshots/*'))}" in dry.stdout.splitlines()


def test_invalid_input_fails_before_any_starting_line(tmp_path):
    for args, code in ((("pull", "nosuch", "x"), "unsupported_provider"),
                       (("pull", "hf", "not a repo"), "invalid_model"),
                       (("pull", "hf", "org/x", "-o", "bogus=1"), "invalid_option")):
        out = subprocess.run([*MODELPULL, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 1
        assert out.stdout == "", out.stdout
        assert out.stderr.startswith(f"error [{code}]: "), out.stderr
        as_json = subprocess.run([*MODELPULL, *args, "--json"], capture_output=True, text=True, timeout=60)
        events = [json.loads(line) for line in as_json.stdout.splitlines()]
        assert [(e["status"], e["error_code"]) for e in events] == [("error", code)]


def test_every_command_reports_errors_the_same_way(tmp_path):
    rm = subprocess.run([*MODELPULL, "rm", "hf", "org/not-here", "--cache-dir", str(tmp_path), "-y"],
                        capture_output=True, text=True, timeout=60)
    listing = subprocess.run([*MODELPULL, "list", "napster"], capture_output=True, text=True, timeout=60)
    pull = subprocess.run([*MODELPULL, "pull", "napster", "x"], capture_output=True, text=True, timeout=60)
    assert rm.returncode == listing.returncode == pull.returncode == 1
    assert rm.stderr.startswith("error [not_found]: org/not-here is not in the Hugging Face cache")
    assert listing.stderr.startswith("error [unsupported_provider]: ")
    assert pull.stderr.startswith("error [unsupported_provider]: ")
