"""Fixtures for the ``ollama-registry`` tests: a real docker-registry and a front.

* ``registry`` (session): Debian's docker-registry (CNCF Distribution) on a
  loopback port; ``registry.push(repo, tag, layers)`` and
  ``registry.push_tiny()`` upload a model.
* ``tiny_model`` (function): a freshly pushed small model with a unique name.
* ``front`` (function): :class:`RegistryFront` in front of ``registry``,
  reset for every test.
* ``cdn`` (function): a second front on 127.0.0.2 (another host) to redirect to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.registry import DockerRegistry, PushedModel, RegistryFront

# The "CDN" host of the redirect tests must never go through a proxy either.
for _var in ("NO_PROXY", "no_proxy"):
    _hosts = [h for h in os.environ.get(_var, "").split(",") if h]
    if "127.0.0.2" not in _hosts:
        os.environ[_var] = ",".join([*_hosts, "127.0.0.2"])

@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    reg = DockerRegistry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def tiny_model(registry: DockerRegistry) -> PushedModel:
    return registry.push_tiny()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def cdn(registry: DockerRegistry) -> Iterator[RegistryFront]:
    with RegistryFront(registry.url, host="127.0.0.2") as srv:
        yield srv


@pytest.fixture
def front(registry: DockerRegistry) -> Iterator[RegistryFront]:
    with RegistryFront(registry.url) as srv:
        yield srv
