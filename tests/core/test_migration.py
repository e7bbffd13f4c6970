"""Code written for abstractcore's download_model runs unchanged after the import line.

The consumer below is written the way the DigitalArticle backend consumes the
other library (status values, ``percent or 0``, byte sizes, stop on a terminal
event) — only the import differs.
"""

from __future__ import annotations

import json

from modelpull import DownloadProgress, DownloadStatus, download_model  # the one changed line


def human(size):
    if size is None:
        return None
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


async def sse_lines(provider, model, token=None, base_url=None):
    lines = []
    async for progress in download_model(provider, model, token=token, base_url=base_url):
        assert isinstance(progress, DownloadProgress)
        lines.append("data: " + json.dumps({
            "status": progress.status.value,
            "message": progress.message,
            "progress": progress.percent or 0,
            "current_size": human(progress.downloaded_bytes),
            "total_size": human(progress.total_bytes),
        }) + "\n\n")
        if progress.status in (DownloadStatus.COMPLETE, DownloadStatus.ERROR):
            break
    return [json.loads(line[6:]) for line in lines]


async def test_ollama_consumer_code_runs_unchanged(ollama_emulator):
    ollama_emulator.add_model("gemma3:1b", [1_500_000, 300])
    events = await sse_lines("ollama", "gemma3:1b", base_url=ollama_emulator.base_url)
    assert events[0]["status"] == "starting"
    assert events[-1]["status"] == "complete" and events[-1]["progress"] == 100.0
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)


async def test_huggingface_consumer_code_runs_unchanged(olah, hf_front, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    olah.make_repo("org/compat", {"config.json": b"{}", "model.safetensors": b"\0" * 200_000})
    monkeypatch.setenv("HF_ENDPOINT", hf_front.endpoint)
    events = await sse_lines("huggingface", "org/compat", token=None)
    assert events[-1]["status"] == "complete", events[-1]
    assert events[-1]["total_size"] == human(200_002)
    assert all(e["status"] in {"starting", "downloading", "verifying", "complete"} for e in events)


async def test_unsupported_provider_is_an_event_not_a_valueerror():
    events = await sse_lines("openai", "gpt-4o")
    assert events[-1]["status"] == "error" and "huggingface" in events[-1]["message"]
