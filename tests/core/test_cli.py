"""`modelpull pull`: progress bar on a terminal, --json, --dry-run, exit status."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid

import pytest

from tests.core.test_hf_contract import MB, random_bytes

MODELPULL = [sys.executable, "-m", "modelpull.cli"]


@pytest.fixture
def repo(olah):
    repo_id = f"org/cli-{uuid.uuid4().hex[:8]}"
    files = {"config.json": b"{}", "model.safetensors": random_bytes(3 * MB, repo_id)}
    olah.make_repo(repo_id, files)
    return repo_id, files


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELPULL, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_json_prints_one_event_per_line_and_exits_0(hf_front, repo, tmp_path):
    repo_id, files = repo
    hf_front.throttle(3 * MB, repo_id=repo_id)
    out = run("pull", "hf", repo_id, "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["status"] == "starting"
    assert events[-1]["status"] == "complete"
    assert events[-1]["downloaded_bytes"] == events[-1]["total_bytes"] == sum(map(len, files.values()))
    assert any(e["status"] == "downloading" for e in events)
    assert os.path.isdir(events[-1]["path"])


def test_error_exits_non_zero_with_the_message(hf_front, tmp_path):
    out = run("pull", "hf", "org/does-not-exist", "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path))
    assert out.returncode != 0
    assert "not_found" in out.stderr and "org/does-not-exist" in out.stderr
    out = run("pull", "nosuch", "x")
    assert out.returncode != 0 and "unsupported_provider" in out.stderr and "huggingface" in out.stderr
    out = run("pull", "hf", "org/x", "--json", "--base-url", "http://127.0.0.1:9")
    assert out.returncode != 0
    assert json.loads(out.stdout.splitlines()[-1])["error_code"] == "connection_failed"


def test_dry_run_prints_the_plan_and_downloads_nothing(hf_front, repo, tmp_path):
    repo_id, files = repo
    out = run("pull", "hf", repo_id, "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "model.safetensors" in out.stdout and "config.json" in out.stdout
    assert "3.0 MB" in out.stdout
    out = run("pull", "hf", repo_id, "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path), "--dry-run", "--json")
    plan = json.loads(out.stdout)
    assert {i["name"]: i["size"] for i in plan["items"]} == {k: len(v) for k, v in files.items()}
    assert not hf_front.requests(method="GET", path_contains="/resolve/")
    assert not list(tmp_path.rglob("blobs/*"))


def test_terminal_gets_a_progress_bar(hf_front, repo, tmp_path):
    repo_id, _ = repo
    hf_front.throttle(2 * MB, repo_id=repo_id)
    pid, fd = pty.fork()
    if pid == 0:  # child: a terminal of its own
        os.environ["COLUMNS"] = "120"
        os.execv(sys.executable, [*MODELPULL, "pull", "hf", repo_id, "--base-url", hf_front.endpoint,
                                  "--cache-dir", str(tmp_path)])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "MB/s" in text or "kB/s" in text  # speed column
    assert "3.0/3.0 MB" in text or "3.0 MB" in text
    assert "✓" in text


def test_token_from_the_environment_stays_out_of_the_output(hf_front, repo, tmp_path):
    repo_id, _ = repo
    token = "hf_CLICANARY" + uuid.uuid4().hex
    hf_front.require_token(token, repo_id=repo_id)
    out = run("pull", "hf", repo_id, "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path), "--json",
              env={"MODELPULL_TOKEN": token})
    assert out.returncode == 0, out.stderr
    assert token not in out.stdout + out.stderr


@pytest.mark.parametrize("where", ["token file", "HF_TOKEN_PATH", "HUGGING_FACE_HUB_TOKEN"])
def test_the_stored_hf_login_is_used_as_huggingface_hub_finds_it(hf_front, repo, tmp_path, where):
    """No token given: the one ``hf auth login`` stored (or the older variable) is used, as
    huggingface_hub's get_token finds it; it stays out of the output."""
    repo_id, _ = repo
    token = "hf_STORED" + uuid.uuid4().hex
    hf_front.require_token(token, repo_id=repo_id)
    home = tmp_path / "hf-home"
    home.mkdir()
    env = {"HF_HOME": str(home)}
    if where == "token file":
        (home / "token").write_text(token + "\n")
    elif where == "HF_TOKEN_PATH":
        (tmp_path / "elsewhere").write_text(token)
        env["HF_TOKEN_PATH"] = str(tmp_path / "elsewhere")
    else:
        env["HUGGING_FACE_HUB_TOKEN"] = token
    args = ("pull", "hf", repo_id, "--base-url", hf_front.endpoint, "--cache-dir", str(tmp_path / "c"), "--json")
    out = run(*args, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    assert token not in out.stdout + out.stderr
    # and without it the repo is refused: the token really came from there
    (home / "token").unlink(missing_ok=True)
    out = run(*args[:-3], "--cache-dir", str(tmp_path / "d"), "--json", env={"HF_HOME": str(home)})
    assert out.returncode != 0 and '"error_code": "not_found"' in out.stdout, out.stdout[-1000:]


@pytest.mark.parametrize("args, words", [
    (["pull", "hf"], "Missing argument 'MODEL'"),
    (["pull", "hf", "a/b", "--no-such-flag"], "No such option '--no-such-flag'"),
    (["rm", "hf"], "name the PROVIDER and the MODEL"),
    (["no-such-command"], "No such command 'no-such-command'"),
])
def test_a_command_line_click_cannot_read_is_an_error_in_the_one_format(args, words):
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.startswith("error [invalid_option]: ") and words in out.stderr, out.stderr
    assert "Usage:" not in out.stderr and "Error:" not in out.stderr
    command = f" {args[0]}" if args[0] in ("pull", "rm") else ""
    assert f"{command} --help')" in out.stderr and "(see '" in out.stderr, out.stderr


def test_with_json_an_unreadable_command_line_is_one_error_event():
    out = run("pull", "hf", "--json")
    assert out.returncode == 2, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(e["status"], e["error_code"]) for e in events] == [("error", "invalid_option")]
    assert "Missing argument 'MODEL'" in events[0]["message"]
