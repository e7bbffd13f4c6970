"""LM Studio's folder: a GGUF gets its name only once its bytes are on disk (strace shows the order)."""

from __future__ import annotations

from tests.servers.strace import assert_durable, traced_download


def test_lmstudio_files_are_flushed_before_they_get_their_names(olah, tiny_gguf, tmp_path):
    models = tmp_path / "lmstudio"
    calls, last = traced_download(
        "lmstudio", tiny_gguf.repo_id + ":Q4_K_M", base_url=olah.endpoint, models_dir=str(models)
    )
    assert last["status"] == "complete", last
    folder = models / tiny_gguf.repo_id
    for name in ("Tiny-Q4_K_M.gguf", "mmproj-Tiny-F16.gguf"):
        assert_durable(calls, (folder / name).resolve())
