"""``oci``: the Docker Model Runner store and a local_dir are published durably (strace).

Every blob, unpacked file and JSON file is flushed before it gets its final name and
its folder after; ``models.json`` gets its entry last.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.servers import oci_artifacts as build
from tests.servers.registry import DockerRegistry
from tests.servers.strace import assert_durable, traced_download


def test_the_store_is_written_durably_and_models_json_last(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.modelpack_artifact(registry)  # a raw layer and three tar layers
    root = tmp_path / "models"
    calls, last = traced_download("oci", f"{registry.host}/{pushed.repo}:{pushed.tag}", insecure=True,
                                  models_dir=str(root))
    assert last["status"] == "complete", last
    for digest in pushed.blobs:
        assert_durable(calls, (root / "blobs" / "sha256" / digest[7:]).resolve())
    model_hex = hashlib.sha256(pushed.manifest).hexdigest()
    assert_durable(calls, (root / "manifests" / "sha256" / model_hex).resolve())
    assert_durable(calls, (root / "models.json").resolve())
    # the bundle is built in a staging folder (every unpacked file flushed), then renamed whole
    bundle = Path(last["path"]).resolve().parent
    assert_durable(calls, bundle)
    at = max(i for i, c in enumerate(calls) if c.kind == "rename" and c.path == str(bundle))
    flushed = {Path(c.path).name for c in calls[:at] if c.kind == "fsync"}
    unpacked = [Path(name).name for name in pushed.files if name != "model.safetensors"]  # that one is a hard link
    assert set(unpacked) <= flushed, sorted(set(unpacked) - flushed)
    assert "config.json" in flushed and "model" in flushed
    renames = [c.path for c in calls if c.kind == "rename"]
    assert renames[-1] == str((root / "models.json").resolve()), renames[-3:]


def test_a_local_dir_is_written_durably(registry: DockerRegistry, tmp_path: Path) -> None:
    pushed = build.kitops_modelkit(registry)  # every file comes out of a tar layer
    local = tmp_path / "model"
    calls, last = traced_download("oci", f"{registry.host}/{pushed.repo}:{pushed.tag}", insecure=True,
                                  local_dir=str(local))
    assert last["status"] == "complete", last
    for name in pushed.files:
        assert_durable(calls, local.resolve() / name)
    assert_durable(calls, (local / ".modelpull" / "layers.json").resolve())
