"""Jobs that outlive the service: the journal in the data directory.

``modelpull serve`` killed with SIGKILL mid-job and started again on the same
data directory lists its jobs under the same ids and resumes the running one
without a new request; a job that had a token comes back paused, needing it;
a graceful stop resumes too; finished jobs come back listed and are forgotten
from the journal when the service forgets them; no token ever reaches the
journal (canary); a corrupt or foreign file in the journal folder is skipped
with a log line. Real servers on loopback throughout (olah behind hf_front,
the Ollama emulator, the service under uvicorn or as a real process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from modelpull.service._jobs import RESTART_SEQ_GAP
from modelpull.service._journal import default_data_dir

from .conftest import free_port, read_ndjson, serve_process, wait_for, wait_job
from .test_pause_resume import _downloaded, _make_repo, assert_one_terminal_event_per_run, post

MB = 1_000_000


def _records(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_bytes()) for p in (data_dir / "jobs").glob("*.json")}


def _everything_in(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (the journal, its lock, temp files...)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink())


def _serve(tmp_path: Path, name: str, data_dir: Path, hf_front: Any, *extra: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``modelpull serve --data-dir DATA_DIR`` as a real process; (process, API url, log file)."""
    port = free_port()
    log_path = tmp_path / f"{name}.log"
    proc = serve_process(["--port", str(port), "--log-level", "info", "--data-dir", str(data_dir),
                          "--cache-dir", str(tmp_path / "hf"), "--hf-endpoint", hf_front.endpoint, *extra], log_path)
    api = f"http://127.0.0.1:{port}/api/models"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log_path.read_text(errors="replace")
        try:
            if httpx.get(api + "/providers", timeout=2).status_code == 200:
                return proc, api, log_path
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "modelpull serve did not answer"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_kill_9_mid_job_then_the_service_resumes_it_on_the_same_data_dir(tmp_path, olah, hf_front, repo_id):
    canary = "hf_JOURNAL" + uuid.uuid4().hex
    big, private, small = repo_id, repo_id + "-private", repo_id + "-small"
    big_files = _make_repo(olah, big, 4 * MB)
    private_files = _make_repo(olah, private, 2 * MB)
    _make_repo(olah, small, 50_000)
    hf_front.require_token(canary, repo_id=private)
    rules = [hf_front.throttle(400_000, repo_id=r, path="model.safetensors") for r in (big, private)]
    data_dir = tmp_path / "data"

    proc, api, log1 = _serve(tmp_path, "serve-1", data_dir, hf_front)
    try:
        with httpx.Client(base_url=api, timeout=30) as client:
            done_id = post(client, "/downloads", {"provider": "huggingface", "model": small}).json()["id"]
            done_view = wait_job(client, done_id)
            assert done_view["state"] == "complete"
            big_id = post(client, "/downloads", {"provider": "huggingface", "model": big}).json()["id"]
            private_id = post(client, "/downloads",
                              {"provider": "huggingface", "model": private, "token": canary}).json()["id"]
            wait_for(lambda: _downloaded(client, big_id) > 1 * MB and _downloaded(client, private_id) > 200_000,
                     timeout=60)
            # the journal follows progress within a few seconds
            wait_for(lambda: (_records(data_dir).get(big_id, {}).get("last_event") or {}).get("status")
                     == "downloading", timeout=10)
            seen = client.get(f"/downloads/{big_id}").json()["last_event_id"]  # a client's Last-Event-ID
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    hf_front.wait_idle()
    for rule in rules:
        hf_front.remove_rule(rule)
    sent_before = hf_front.file_bytes_sent(big, "model.safetensors")
    assert sent_before < 4 * MB, "the big download finished before the kill"

    records = _records(data_dir)
    assert set(records) == {done_id, big_id, private_id}
    assert records[big_id]["state"] == "running" and records[big_id]["has_token"] is False
    assert records[private_id]["state"] == "running" and records[private_id]["has_token"] is True
    assert records[done_id]["state"] == "complete"
    assert records[big_id]["request"] == {"provider": "huggingface", "model": big, "base_url": hf_front.endpoint,
                                          "options": {"cache_dir": str(tmp_path / "hf")}}
    assert canary.encode() not in _everything_in(data_dir)

    proc, api, log2 = _serve(tmp_path, "serve-2", data_dir, hf_front)
    try:
        with httpx.Client(base_url=api, timeout=30) as client:
            listed = {job["id"]: job for job in client.get("/downloads").json()["jobs"]}
            assert set(listed) == {done_id, big_id, private_id}
            assert all(job["restored"] for job in listed.values())
            # the finished job: listed again, its last event as it was
            assert listed[done_id]["state"] == "complete"
            assert listed[done_id]["progress"] == done_view["progress"]
            assert listed[done_id]["last_event_id"] == done_view["last_event_id"]
            # the running one resumed by itself: nobody posted it again
            assert listed[big_id]["state"] in ("running", "complete") and listed[big_id]["runs"] == 2
            big_view = wait_job(client, big_id, timeout=60)
            assert big_view["state"] == "complete", big_view
            # a client reconnecting with the Last-Event-ID it had before the kill
            after_kill = read_ndjson(client, f"/downloads/{big_id}/events?format=ndjson",
                                     headers={"Last-Event-ID": str(seen)})
            # the job with a token: paused, asking for it
            private_view = client.get(f"/downloads/{private_id}").json()
            assert private_view["state"] == "paused" and private_view["needs_token"] is True
            assert private_view["actions"] == ["resume", "remove"]
            assert "needs its token again: resume it with the token" in private_view["progress"]["message"]
            refused = post(client, f"/downloads/{private_id}/resume")
            assert refused.status_code == 409 and refused.json()["error_code"] == "needs_token"
            resumed = post(client, f"/downloads/{private_id}/resume", {"token": canary})
            assert resumed.status_code == 200 and resumed.json()["needs_token"] is False
            private_view = wait_job(client, private_id, timeout=60)
            assert private_view["state"] == "complete", private_view
            answers = [client.get("/downloads").text, json.dumps(after_kill)]
        assert "POST /api/models/downloads HTTP" not in log2.read_text()
    finally:
        _stop(proc)

    snapshot = tmp_path / "hf" / f"models--{big.replace('/', '--')}" / "snapshots"
    assert [p.read_bytes() for p in snapshot.glob("*/model.safetensors")] == [big_files["model.safetensors"]]
    private_path = Path(private_view["progress"]["path"]) / "model.safetensors"
    assert private_path.read_bytes() == private_files["model.safetensors"]
    # resumed from the partial: a Range from where it was, and little fetched twice
    gets = [r for r in hf_front.requests(method="GET", file_path="model.safetensors") if r.repo_id == big]
    assert any(r.range and not r.range.startswith("bytes=0-") for r in gets), [r.range for r in gets]
    refetched = hf_front.file_bytes_sent(big, "model.safetensors") - 4 * MB
    assert 0 <= refetched < 4 * MB // 10, f"{refetched} bytes fetched twice"
    # events after the kill: numbered on from where the client was, the cut run ended once
    seqs = [e["seq"] for e in after_kill]
    assert seqs and seqs == sorted(seqs) and seqs[0] > seen and len(set(seqs)) == len(seqs)
    statuses = [(e["status"], e["error_code"]) for e in after_kill]
    assert ("error", "interrupted") in statuses and statuses[-1] == ("complete", None)
    interrupted = statuses.index(("error", "interrupted"))
    assert statuses[interrupted + 1] == ("starting", None)
    assert_one_terminal_event_per_run(after_kill[interrupted + 1:])
    # the canary: never in the journal, the logs or any answer
    records = _records(data_dir)
    assert {r["state"] for r in records.values()} == {"complete"}
    assert canary.encode() not in _everything_in(data_dir)
    for text in (log1.read_text(), log2.read_text(), *answers):
        assert canary not in text


def test_a_graceful_restart_resumes_running_jobs_and_keeps_the_others_as_they_were(
    start_service, olah, hf_front, ollama_emulator, repo_id, tmp_path,
):
    data_dir = tmp_path / "data"
    settings = {"hf_endpoint": hf_front.endpoint, "ollama_url": ollama_emulator.base_url,
                "hf_cache_dir": str(tmp_path / "hf"), "data_dir": str(data_dir)}
    running_files = _make_repo(olah, repo_id, 2 * MB)
    paused_repo = repo_id + "-p"
    _make_repo(olah, paused_repo, 1 * MB)
    rules = [hf_front.throttle(400_000, repo_id=r, path="model.safetensors") for r in (repo_id, paused_repo)]
    ollama_emulator.add_model("journal-done:1b", [20_000], bytes_per_sec=10 * MB)
    ollama_emulator.add_model("journal-gone:1b", [20_000], bytes_per_sec=10 * MB)
    ollama_emulator.add_model("journal-cancel:1b", [3 * MB, 100], bytes_per_sec=500_000)

    first = start_service(**settings)
    with first.client() as client:
        done = post(client, "/downloads", {"provider": "ollama", "model": "journal-done:1b"}).json()["id"]
        gone = post(client, "/downloads", {"provider": "ollama", "model": "journal-gone:1b"}).json()["id"]
        failed = post(client, "/downloads", {"provider": "ollama", "model": "journal-absent:1b"}).json()["id"]
        cancelled = post(client, "/downloads", {"provider": "ollama", "model": "journal-cancel:1b"}).json()["id"]
        running = post(client, "/downloads", {"provider": "huggingface", "model": repo_id}).json()["id"]
        paused = post(client, "/downloads", {"provider": "huggingface", "model": paused_repo}).json()["id"]
        for job_id in (done, gone, failed):
            wait_job(client, job_id)
        wait_for(lambda: (data_dir / "jobs" / f"{gone}.json").exists())
        # forgetting a finished job forgets it in the journal too
        assert client.delete(f"/downloads/{gone}").json()["removed"] is True
        wait_for(lambda: not (data_dir / "jobs" / f"{gone}.json").exists())
        wait_for(lambda: _downloaded(client, cancelled) > 0 and _downloaded(client, paused) > 100_000
                 and _downloaded(client, running) > 300_000)
        assert client.delete(f"/downloads/{cancelled}").json()["state"] == "cancelled"
        assert post(client, f"/downloads/{paused}/pause").json()["state"] == "paused"
        before = {job["id"]: job for job in client.get("/downloads").json()["jobs"]}
    first.stop()  # graceful: the running job is stopped, the journal keeps it as running
    assert "Application shutdown complete." in first.log_text()
    records = _records(data_dir)
    assert {k: r["state"] for k, r in records.items()} == {
        done: "complete", failed: "error", cancelled: "cancelled", running: "running", paused: "paused"}
    for rule in rules:
        hf_front.remove_rule(rule)

    second = start_service(**settings)
    with second.client() as client:
        after = {job["id"]: job for job in client.get("/downloads").json()["jobs"]}
        assert set(after) == set(before) == {done, failed, cancelled, running, paused}
        for job_id in (done, failed, cancelled, paused):
            assert after[job_id]["state"] == before[job_id]["state"]
            assert after[job_id]["progress"] == before[job_id]["progress"]
            assert after[job_id]["restored"] is True
        assert after[paused]["actions"] == ["resume", "remove"] and after[paused]["needs_token"] is False
        assert after[failed]["actions"] == ["retry", "remove"]
        assert after[running]["runs"] == 2
        view = wait_job(client, running)
        assert view["state"] == "complete", view
        events = read_ndjson(client, f"/downloads/{running}/events?format=ndjson")
        # the paused job waits for its resume, then continues from its partial
        assert client.get(f"/downloads/{paused}").json()["state"] == "paused"
        assert post(client, f"/downloads/{paused}/resume").json()["runs"] == 2
        assert wait_job(client, paused)["state"] == "complete"
    assert (Path(view["progress"]["path"]) / "model.safetensors").read_bytes() == running_files["model.safetensors"]
    # only the last event was kept across the restart; the numbering jumps past any number a
    # client may have seen that the journal had not (RESTART_SEQ_GAP), then goes on one by one
    assert events[0]["seq"] >= before[running]["last_event_id"] and events[0]["status"] == "downloading"
    assert events[1]["seq"] == events[0]["seq"] + RESTART_SEQ_GAP + 1
    assert [e["seq"] for e in events[1:]] == list(range(events[1]["seq"], events[1]["seq"] + len(events) - 1))
    starting = [i for i, e in enumerate(events) if e["status"] == "starting"]
    assert starting and events[starting[0] - 1]["error_code"] == "interrupted"
    for name in (paused_repo,):
        gets = [r for r in hf_front.requests(method="GET", file_path="model.safetensors") if r.repo_id == name]
        assert any(r.range and not r.range.startswith("bytes=0-") for r in gets), [r.range for r in gets]


def test_finished_jobs_leave_the_journal_when_the_service_forgets_them(start_service, ollama_emulator, tmp_path):
    data_dir = tmp_path / "data"
    ollama_emulator.add_model("short-lived:1b", [10_000], bytes_per_sec=10 * MB)
    first = start_service(ollama_url=ollama_emulator.base_url, data_dir=str(data_dir), keep_finished=1.0)
    with first.client() as client:
        job_id = post(client, "/downloads", {"provider": "ollama", "model": "short-lived:1b"}).json()["id"]
        assert wait_job(client, job_id)["state"] == "complete"
        wait_for(lambda: (data_dir / "jobs" / f"{job_id}.json").exists())
        time.sleep(1.2)
        assert client.get("/downloads").json()["jobs"] == []
        wait_for(lambda: not (data_dir / "jobs" / f"{job_id}.json").exists())
        second_id = post(client, "/downloads", {"provider": "ollama", "model": "short-lived:1b"}).json()["id"]
        assert wait_job(client, second_id)["state"] == "complete"
    first.stop()
    assert (data_dir / "jobs" / f"{second_id}.json").exists()
    time.sleep(1.2)
    # expired while the service was down: not listed again, and gone from the journal
    second = start_service(ollama_url=ollama_emulator.base_url, data_dir=str(data_dir), keep_finished=1.0)
    with second.client() as client:
        assert client.get("/downloads").json()["jobs"] == []
    wait_for(lambda: not (data_dir / "jobs" / f"{second_id}.json").exists())


def test_corrupt_and_foreign_files_in_the_journal_are_skipped_with_a_log_line(
    start_service, ollama_emulator, tmp_path,
):
    data_dir = tmp_path / "data"
    ollama_emulator.add_model("survivor:1b", [10_000], bytes_per_sec=10 * MB)
    first = start_service(ollama_url=ollama_emulator.base_url, data_dir=str(data_dir))
    with first.client() as client:
        kept = post(client, "/downloads", {"provider": "ollama", "model": "survivor:1b"}).json()["id"]
        wait_job(client, kept)
    first.stop()
    jobs = data_dir / "jobs"
    record = json.loads((jobs / f"{kept}.json").read_bytes())
    bad = {
        "0123456789abcdef.json": b"{not json",
        "1123456789abcdef.json": json.dumps({**record, "id": "something-else"}).encode(),
        "2123456789abcdef.json": json.dumps({**record, "id": "2123456789abcdef", "version": 99}).encode(),
        "3123456789abcdef.json": json.dumps({**record, "id": "3123456789abcdef", "state": "exploded"}).encode(),
        "4123456789abcdef.json": json.dumps({**record, "id": "4123456789abcdef", "last_event": {"seq": "x"}}).encode(),
        "5123456789abcdef.json": b"\xff\xfe\x00 binary",
        "6123456789abcdef.json": b"[" * 100_000 + b"]" * 100_000,
        "7123456789abcdef.json": json.dumps([1, 2, 3]).encode(),
        "notes.txt": b"someone's notes",
        "abc.json": json.dumps(record).encode(),
    }
    for name, data in bad.items():
        (jobs / name).write_bytes(data)
    (jobs / "8123456789abcdef.json").mkdir()
    (jobs / "9123456789abcdef.json").symlink_to("/etc/passwd")
    stale = jobs / f".{kept}.json.abc123.tmp"
    stale.write_bytes(b'{"half": ')

    second = start_service(ollama_url=ollama_emulator.base_url, data_dir=str(data_dir))
    with second.client() as client:
        listed = [job["id"] for job in client.get("/downloads").json()["jobs"]]
    assert listed == [kept]
    log = second.log_text()
    for name in [*bad, "8123456789abcdef.json", "9123456789abcdef.json"]:
        assert f"journal: skipped {name}" in log, name
    assert "the id inside does not match" in log and "record version" in log
    # nothing of someone else's is deleted; a write cut short (ours) is cleared
    assert all((jobs / name).exists() for name in bad) and (jobs / "9123456789abcdef.json").is_symlink()
    assert not stale.exists()


def test_a_base_url_with_credentials_is_never_written_and_the_job_comes_back_not_resumable(
    start_service, olah, hf_front, repo_id, tmp_path,
):
    data_dir = tmp_path / "data"
    _make_repo(olah, repo_id, 2 * MB)
    rule = hf_front.throttle(300_000, repo_id=repo_id, path="model.safetensors")
    secret = "pw" + uuid.uuid4().hex[:12]
    base_url = hf_front.endpoint.replace("http://", f"http://someone:{secret}@")
    first = start_service(data_dir=str(data_dir))
    with first.client() as client:
        job_id = post(client, "/downloads", {"provider": "huggingface", "model": repo_id, "base_url": base_url}).json()["id"]
        wait_for(lambda: _downloaded(client, job_id) > 100_000)
        assert client.get(f"/downloads/{job_id}").json()["base_url"].startswith("http://***@")
    first.stop()
    hf_front.remove_rule(rule)
    assert secret.encode() not in _everything_in(data_dir)
    assert _records(data_dir)[job_id]["base_url_had_credentials"] is True
    second = start_service(data_dir=str(data_dir))
    with second.client() as client:
        view = client.get(f"/downloads/{job_id}").json()
        assert view["state"] == "error" and view["actions"] == ["remove"]
        assert view["progress"]["error_code"] == "interrupted" and "credentials" in view["progress"]["message"]
        refused = post(client, f"/downloads/{job_id}/resume")
        assert refused.status_code == 409 and refused.json()["error_code"] == "not_resumable"
    assert secret not in first.log_text() + second.log_text()


def test_the_data_directory_by_default_and_one_service_per_directory(start_service, ollama_emulator, tmp_path):
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    ollama_emulator.add_model("where:1b", [5_000], bytes_per_sec=10 * MB)
    script = ("import json; from modelpull.service._journal import default_data_dir; "
              "print(json.dumps(str(default_data_dir())))")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "MODELPULL_DATA_DIR")}
    for extra, expected in (({}, home / ".local/share/modelpull/service"),
                            ({"XDG_DATA_HOME": "relative/ignored"}, home / ".local/share/modelpull/service"),
                            ({"XDG_DATA_HOME": str(xdg)}, xdg / "modelpull/service")):
        out = subprocess.run([sys.executable, "-c", script], env={**env, "HOME": str(home), **extra},
                             capture_output=True, text=True, check=True, timeout=60).stdout
        assert Path(json.loads(out)) == expected
    assert default_data_dir().is_absolute()

    # modelpull serve with neither --data-dir nor MODELPULL_DATA_DIR: the XDG folder
    port = free_port()
    proc = serve_process(["--port", str(port), "--ollama-host", ollama_emulator.base_url], tmp_path / "default.log",
                         env={"MODELPULL_DATA_DIR": "", "XDG_DATA_HOME": str(xdg), "HOME": str(home)})
    try:
        api = f"http://127.0.0.1:{port}/api/models"
        wait_for(lambda: _answers(api), timeout=30)
        with httpx.Client(base_url=api, timeout=30) as client:
            job_id = post(client, "/downloads", {"provider": "ollama", "model": "where:1b"}).json()["id"]
            wait_job(client, job_id)
        wait_for(lambda: (xdg / "modelpull/service/jobs" / f"{job_id}.json").exists())

        # a second service on the same data directory would resume the same jobs: refused
        refused = subprocess.run(
            [sys.executable, "-c", "from modelpull.cli import main; main()", "serve", "--port", str(free_port()),
             "--data-dir", str(xdg / "modelpull/service")],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert refused.returncode != 0
        assert "another modelpull service uses the data directory" in refused.stderr
        # without a chosen folder, a second service still starts, without a journal, and says so
        port2 = free_port()
        second = serve_process(["--port", str(port2)], tmp_path / "second.log",
                               env={"MODELPULL_DATA_DIR": "", "XDG_DATA_HOME": str(xdg), "HOME": str(home)})
        try:
            wait_for(lambda: _answers(f"http://127.0.0.1:{port2}/api/models"), timeout=30)
        finally:
            _stop(second)
        assert "warning: jobs will not outlive this service: another modelpull service uses the data directory" in (
            tmp_path / "second.log").read_text()
    finally:
        _stop(proc)
    # an unusable data directory is refused before the service starts
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    failed = subprocess.run(
        [sys.executable, "-c", "from modelpull.cli import main; main()", "serve", "--port", str(free_port()),
         "--data-dir", str(blocker / "data")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert failed.returncode != 0 and "cannot use the data directory" in failed.stderr


def _answers(api: str) -> bool:
    try:
        return httpx.get(api + "/providers", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_record_is_flushed_before_its_rename_and_the_folder_after(tmp_path, ollama_emulator):
    """``modelpull serve`` under Debian's strace: temp file fsynced, renamed into place, folder fsynced."""
    from tests.servers.strace import assert_durable, parse, strace_path

    ollama_emulator.add_model("durable-journal:1b", [5_000], bytes_per_sec=10 * MB)
    data_dir, trace, log_path = tmp_path / "data", tmp_path / "trace.txt", tmp_path / "serve.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [strace_path(), "-f", "--seccomp-bpf", "-y", "-qq", "-s", "4096", "-o", str(trace),
             "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
             sys.executable, "-c", "from modelpull.cli import main; main()", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--ollama-host", ollama_emulator.base_url],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    served: list[int] = []
    try:
        api = f"http://127.0.0.1:{port}/api/models"
        wait_for(lambda: proc.poll() is None and _answers(api), timeout=60)
        served.append(int(log_path.read_text().split("Started server process [", 1)[1].split("]", 1)[0]))
        with httpx.Client(base_url=api, timeout=30) as client:
            job_id = post(client, "/downloads", {"provider": "ollama", "model": "durable-journal:1b"}).json()["id"]
            view = wait_job(client, job_id)
            assert view["state"] == "complete", view["progress"]["message"]
        wait_for(lambda: _records(data_dir).get(job_id, {}).get("state") == "complete", timeout=10)
    finally:
        # stop the service itself (strace would only detach from it), then strace ends with it
        for pid in served:
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            for pid in served:
                os.kill(pid, signal.SIGKILL)
    assert "Application shutdown complete" in log_path.read_text()
    record = data_dir / "jobs" / f"{job_id}.json"
    calls = parse(trace.read_text())
    assert_durable(calls, record)
    renames = [c for c in calls if c.kind == "rename" and c.path == str(record)]
    assert len(renames) >= 2  # written when it started and again when it finished: each time whole
    assert all(Path(c.source).name.startswith(f".{job_id}.json.") for c in renames)
