"""The tar unpacker against good and hostile layers: nothing outside, nothing half-done."""

from __future__ import annotations

import io
import os
import secrets
import stat
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from modelpull._unpack import unpack_tar
from modelpull.errors import UnsafeSource
from tests.servers.oci_artifacts import HOSTILE_TARS, compress, hostile_tar, tar_bytes


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_a_good_tar_lands_whole_and_the_staging_folder_is_gone(tmp_path: Path, compression: str) -> None:
    entries: dict[str, bytes | None] = {
        "./": None, "weights": None, "weights/model.safetensors": os.urandom(3000),
        "config.json": b"{}", "deep/er/file.txt": b"x",
    }
    archive = tmp_path / "layer.tar"
    archive.write_bytes(tar_bytes(entries, compression))  # type: ignore[arg-type]
    dest = tmp_path / "models" / "tiny"

    written = unpack_tar(archive, dest, compression)  # type: ignore[arg-type]

    assert sorted(map(str, written)) == ["config.json", "deep/er/file.txt", "weights/model.safetensors"]
    assert (dest / "weights/model.safetensors").read_bytes() == entries["weights/model.safetensors"]
    assert (dest / "deep/er/file.txt").read_bytes() == b"x"
    assert os.listdir(tmp_path / "models") == ["tiny"]  # no staging folder left


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("kind", HOSTILE_TARS)
def test_each_hostile_tar_is_refused_and_leaves_nothing_behind(tmp_path: Path, kind: str, compression: str) -> None:
    target_name = f"modelpull-escape-{secrets.token_hex(4)}.txt"
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(hostile_tar(kind, compression, target_name))  # type: ignore[arg-type]
    parent = tmp_path / "models"
    parent.mkdir()
    before = _tree(tmp_path)

    with pytest.raises(UnsafeSource) as refused:
        unpack_tar(archive, parent / "tiny", compression)  # type: ignore[arg-type]

    assert "refusing" in str(refused.value)
    assert _tree(tmp_path) == before  # not even the harmless first entry, no staging folder
    assert not Path("/tmp", target_name).exists()
    assert not (tmp_path / target_name).exists()


@pytest.mark.parametrize(
    ("kind", "words"),
    [("absolute", "outside"), ("dotdot", "outside"), ("symlink", "symbolic link"), ("hardlink", "hard link"),
     ("device", "character device"), ("fifo", "FIFO"), ("duplicate", "twice"), ("below_file", "which is a file")],
)
def test_the_refusal_says_what_the_entry_was(tmp_path: Path, kind: str, words: str) -> None:
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(hostile_tar(kind))
    with pytest.raises(UnsafeSource, match=words):
        unpack_tar(archive, tmp_path / "out")


def test_a_path_another_layer_owns_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"raw layer")
    archive = tmp_path / "layer.tar"
    archive.write_bytes(tar_bytes({"model.safetensors": b"from the tar", "other.json": b"{}"}))

    with pytest.raises(UnsafeSource, match="another layer"):
        unpack_tar(archive, dest, reserved=[PurePosixPath("model.safetensors")])

    assert (dest / "model.safetensors").read_bytes() == b"raw layer"
    assert not (dest / "other.json").exists()


def test_a_symlinked_folder_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    archive = tmp_path / "layer.tar"
    archive.write_bytes(tar_bytes({"sub/file.txt": b"would escape"}))

    with pytest.raises(UnsafeSource, match="symbolic link"):
        unpack_tar(archive, dest)

    assert list(outside.iterdir()) == []


def test_a_file_from_an_earlier_run_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "config.json").write_bytes(b"old")
    archive = tmp_path / "layer.tar"
    archive.write_bytes(tar_bytes({"config.json": b"new"}))
    unpack_tar(archive, dest)
    assert (dest / "config.json").read_bytes() == b"new"


def test_modes_keep_only_sane_bits(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("run.sh", 0o4777), ("data.bin", 0o2666)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 1, mode
            tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "layer.tar"
    archive.write_bytes(buffer.getvalue())
    unpack_tar(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out/data.bin").stat().st_mode) == 0o644


def test_an_archive_bigger_than_allowed_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(compress(tar_bytes({"zeros.bin": bytes(2_000_000)}), "gzip"))
    assert archive.stat().st_size < 20_000
    with pytest.raises(UnsafeSource, match="more than"):
        unpack_tar(archive, tmp_path / "out", "gzip", max_bytes=1_000_000)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_corrupt_compressed_data_is_refused(tmp_path: Path, compression: str) -> None:
    good = tar_bytes({"a.txt": os.urandom(5000)}, compression)  # type: ignore[arg-type]
    archive = tmp_path / "broken"
    archive.write_bytes(good[: len(good) // 2] + bytes(len(good) // 2))
    with pytest.raises(UnsafeSource):
        unpack_tar(archive, tmp_path / "out", compression)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]
