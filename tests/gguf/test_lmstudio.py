"""``lmstudio``: LM Studio's folder layout, where that folder is, files visible only
once verified, MLX repos whole, and the list/delete functions the inventory uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpull import DownloadStatus, download_model
from modelpull.errors import InvalidModel, ModelNotFound
from modelpull.stores.lmstudio import delete_local, list_local, resolve_models_dir


async def pull(hf_front, model, **options):
    return [e async for e in download_model("lmstudio", model, base_url=hf_front.endpoint, **options)]


def visible(models: Path) -> list[str]:
    """What LM Studio sees: files under <models>/<publisher>/<repo>/, hidden folders skipped."""
    return sorted(
        p.relative_to(models).as_posix() for p in models.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(models).parts)
    )


async def test_gguf_lands_as_publisher_repo_file(hf_front, tiny_gguf, tmp_path):
    events = await pull(hf_front, f"{tiny_gguf.repo_id}:Q8_0", models_dir=str(tmp_path))
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    folder = tmp_path / tiny_gguf.repo_id
    assert done.path == str(folder / "Tiny-Q8_0.gguf")
    assert visible(tmp_path) == [f"{tiny_gguf.repo_id}/Tiny-Q8_0.gguf", f"{tiny_gguf.repo_id}/mmproj-Tiny-F16.gguf"]
    assert (folder / "Tiny-Q8_0.gguf").read_bytes() == tiny_gguf.files["Tiny-Q8_0.gguf"]
    assert done.downloaded_bytes == done.total_bytes == tiny_gguf.size("Tiny-Q8_0.gguf", "mmproj-Tiny-F16.gguf")


async def test_split_parts_from_a_subfolder_sit_side_by_side(hf_front, tiny_gguf, tmp_path):
    done = (await pull(hf_front, f"{tiny_gguf.repo_id}:f16", models_dir=str(tmp_path), mmproj="false"))[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    names = [Path(p).name for p in tiny_gguf.split]
    assert visible(tmp_path) == sorted(f"{tiny_gguf.repo_id}/{n}" for n in names)
    assert done.path == str(tmp_path / tiny_gguf.repo_id / names[0])
    for part, name in zip(tiny_gguf.split, names):
        assert (tmp_path / tiny_gguf.repo_id / name).read_bytes() == tiny_gguf.files[part]


async def test_a_half_downloaded_file_is_never_visible_under_its_name(hf_front, big_split, tmp_path):
    repo = big_split
    final = tmp_path / repo.repo_id / Path(repo.split[0]).name
    throttle = hf_front.throttle(150_000, repo_id=repo.repo_id)
    events = download_model("lmstudio", f"{repo.repo_id}:Q8_0", base_url=hf_front.endpoint,
                            models_dir=str(tmp_path), max_parallel_files=1)
    seen_bytes = 0
    async for event in events:
        assert event.status is not DownloadStatus.ERROR, event.message
        seen_bytes = event.downloaded_bytes or 0
        if 0 < seen_bytes < len(repo.files[repo.split[0]]):
            assert not final.exists()
            assert visible(tmp_path) == []
        if seen_bytes > 40_000:
            break
    await events.aclose()
    hf_front.remove_rule(throttle)
    assert seen_bytes > 40_000
    assert not final.exists() and visible(tmp_path) == []
    partials = [p for p in (tmp_path / ".modelpull").rglob("*.incomplete")]
    assert [p.name.split(".gguf.")[0] + ".gguf" for p in partials] == [Path(repo.split[0]).name]

    done = (await pull(hf_front, f"{repo.repo_id}:Q8_0", models_dir=str(tmp_path)))[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert visible(tmp_path) == sorted(f"{repo.repo_id}/{p}" for p in repo.split)
    assert not list((tmp_path / ".modelpull").rglob("*.incomplete"))


async def test_mlx_repo_comes_whole_with_the_mlx_file_choice(hf_front, mlx_repo, tmp_path):
    events = await pull(hf_front, mlx_repo.repo_id, models_dir=str(tmp_path))
    done = events[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    folder = tmp_path / mlx_repo.repo_id
    assert done.path == str(folder)
    assert visible(tmp_path) == [f"{mlx_repo.repo_id}/{n}" for n in (
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")]
    assert (folder / "model.safetensors").read_bytes() == mlx_repo.files["model.safetensors"]
    tagged = await pull(hf_front, f"{mlx_repo.repo_id}:Q4_K_M", models_dir=str(tmp_path))
    assert tagged[-1].error_code == "not_found"
    assert "MLX" in tagged[-1].message


async def test_repo_with_neither_gguf_nor_mlx_weights_is_incompatible(hf_front, tiny_gguf, olah, tmp_path):
    olah.make_repo("modelpull-gguf/Only-Bin", {"config.json": b"{}", "pytorch_model.bin": b"\0" * 3000})
    events = await pull(hf_front, "modelpull-gguf/Only-Bin", models_dir=str(tmp_path))
    assert events[-1].error_code == "incompatible_model"


async def test_models_folder_comes_from_lm_studio_settings(hf_front, tiny_gguf, tmp_path, monkeypatch):
    home = tmp_path / "home"
    configured = tmp_path / "elsewhere" / "models"
    (home / ".lmstudio").mkdir(parents=True)
    (home / ".lmstudio" / "settings.json").write_text(json.dumps({"downloadsFolder": str(configured)}))
    monkeypatch.setenv("HOME", str(home))
    done = (await pull(hf_front, f"{tiny_gguf.repo_id}:Q2_K", mmproj=False))[-1]
    assert done.status is DownloadStatus.COMPLETE, done.message
    assert done.path == str(configured / tiny_gguf.repo_id / "Tiny-Q2_K.gguf")
    assert [m["name"] for m in list_local()] == [tiny_gguf.repo_id]


def test_models_folder_resolution_order(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    assert resolve_models_dir() == home / ".lmstudio" / "models"
    (home / ".cache" / "lm-studio").mkdir(parents=True)
    assert resolve_models_dir() == home / ".cache" / "lm-studio" / "models"
    moved = tmp_path / "moved-home"
    moved.mkdir()
    (home / ".lmstudio-home-pointer").write_text(f"{moved}\n")
    assert resolve_models_dir() == moved / "models"
    legacy = home / ".config" / "LM Studio"
    legacy.mkdir(parents=True)
    (legacy / "settings.json").write_text(json.dumps({"downloadsFolder": "~/old-models"}))
    assert resolve_models_dir() == home / "old-models"
    (moved / "settings.json").write_text(json.dumps({"downloadsFolder": str(tmp_path / "mine")}))
    assert resolve_models_dir() == tmp_path / "mine"
    (moved / "settings.json").write_text("{not json")
    assert resolve_models_dir() == home / "old-models"
    assert resolve_models_dir(tmp_path / "explicit") == tmp_path / "explicit"


async def test_list_and_delete(hf_front, tiny_gguf, mlx_repo, tmp_path):
    for model in (f"{tiny_gguf.repo_id}:Q4_K_S", mlx_repo.repo_id):
        assert (await pull(hf_front, model, models_dir=str(tmp_path)))[-1].status is DownloadStatus.COMPLETE
    (tmp_path / "someone" / "empty-folder").mkdir(parents=True)
    listed = {m["name"]: m for m in list_local(tmp_path)}
    assert sorted(listed) == sorted([tiny_gguf.repo_id, mlx_repo.repo_id])
    gguf = listed[tiny_gguf.repo_id]
    assert gguf["size"] == tiny_gguf.size("Tiny-Q4_K_S.gguf", "mmproj-Tiny-F16.gguf")
    assert gguf["format"] == "gguf" and listed[mlx_repo.repo_id]["format"] == "mlx"
    assert gguf["path"] == str(tmp_path / tiny_gguf.repo_id)
    assert sorted(gguf["files"]) == ["Tiny-Q4_K_S.gguf", "mmproj-Tiny-F16.gguf"]
    assert isinstance(gguf["modified"], float)

    removed = delete_local(tiny_gguf.repo_id, models_dir=tmp_path)
    assert removed["size"] == gguf["size"]
    assert not (tmp_path / tiny_gguf.repo_id).exists()
    assert not (tmp_path / ".modelpull" / tiny_gguf.repo_id).exists()
    assert [m["name"] for m in list_local(tmp_path)] == [mlx_repo.repo_id]
    with pytest.raises(ModelNotFound):
        delete_local(tiny_gguf.repo_id, models_dir=tmp_path)
    for bad in ("../etc", "a/b/c", ".modelpull/x", ""):
        with pytest.raises(InvalidModel):
            delete_local(bad, models_dir=tmp_path)
    assert list_local(tmp_path / "missing") == []


async def test_a_file_already_in_place_is_adopted_when_its_digest_matches(hf_front, tiny_gguf, tmp_path):
    folder = tmp_path / tiny_gguf.repo_id
    folder.mkdir(parents=True)
    # as if LM Studio had downloaded them: the right Q8_0, and a same-size impostor projector
    (folder / "Tiny-Q8_0.gguf").write_bytes(tiny_gguf.files["Tiny-Q8_0.gguf"])
    impostor = bytearray(tiny_gguf.files["mmproj-Tiny-F16.gguf"])
    impostor[-1] ^= 0xFF
    (folder / "mmproj-Tiny-F16.gguf").write_bytes(bytes(impostor))
    events = await pull(hf_front, f"{tiny_gguf.repo_id}:Q8_0", models_dir=str(tmp_path))
    assert events[0].downloaded_bytes == len(tiny_gguf.files["Tiny-Q8_0.gguf"])
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    fetched = [r.file_path for r in hf_front.requests(method="GET") if r.file_path]
    assert fetched == ["mmproj-Tiny-F16.gguf"]
    assert (folder / "mmproj-Tiny-F16.gguf").read_bytes() == tiny_gguf.files["mmproj-Tiny-F16.gguf"]
