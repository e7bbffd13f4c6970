"""``modelpull serve``, ``modelpull list`` and ``modelpull rm``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from ._format import format_bytes
from .cli import main
from .errors import ModelpullError


def _inventory_options(cache_dir: str | None, ollama_host: str | None, ollama_models: str | None,
                       lmstudio_dir: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if lmstudio_dir:
        options["lmstudio_dir"] = lmstudio_dir
    if cache_dir:
        options["cache_dir"] = cache_dir
    if ollama_host:
        options["ollama_url"] = ollama_host
    if ollama_models:
        options["ollama_models_dir"] = ollama_models
    return options


_cache_option = click.option("--cache-dir", type=click.Path(file_okay=False), help="Hugging Face cache folder (default HF_HUB_CACHE or ~/.cache/huggingface/hub).")
_ollama_host_option = click.option("--ollama-host", help="Ollama server address (default OLLAMA_HOST or http://localhost:11434).")
_ollama_models_option = click.option("--ollama-models", type=click.Path(file_okay=False), help="Ollama model store folder (default OLLAMA_MODELS or ~/.ollama/models).")
_lmstudio_option = click.option("--lmstudio-dir", type=click.Path(file_okay=False), help="LM Studio models folder (default: from LM Studio's settings).")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anything but loopback needs an API key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", envvar="MODELPULL_API_KEY", help="Require 'Authorization: Bearer <key>' on every API call (or MODELPULL_API_KEY).")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser calls from this origin (repeatable); closed by default.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, help="Host header to accept (repeatable; default: loopback names).")
@_cache_option
@click.option("--hf-endpoint", help="Hub address for huggingface/mlx downloads (default HF_ENDPOINT or huggingface.co).")
@_ollama_host_option
@_ollama_models_option
@_lmstudio_option
@click.option("--allow-client-paths", is_flag=True, help="Let requests choose folders (cache_dir, local_dir, ...).")
@click.option("--keep-finished", default=3600.0, show_default=True, help="Seconds a finished job stays listed.")
@click.option("--max-running", default=32, show_default=True, type=click.IntRange(1, 1000), help="Downloads running at once.")
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(
    host: str, port: int, api_key: str | None, cors_origins: tuple[str, ...], allowed_hosts: tuple[str, ...],
    cache_dir: str | None, hf_endpoint: str | None, ollama_host: str | None, ollama_models: str | None,
    lmstudio_dir: str | None,
    allow_client_paths: bool, keep_finished: float, max_running: int, log_level: str,
) -> None:
    """Run the download service and its web page (http://127.0.0.1:8000)."""
    try:
        import uvicorn  # noqa: F401

        from .service import ConfigError, ServiceConfig, run
    except ImportError:
        raise click.ClickException(
            "the service needs FastAPI and uvicorn: pip install 'modelpull[service]'"
        ) from None
    config = ServiceConfig(
        host=host, port=port, api_key=api_key or None, cors_origins=list(cors_origins),
        allowed_hosts=list(allowed_hosts), hf_cache_dir=cache_dir, hf_endpoint=hf_endpoint,
        ollama_url=ollama_host, ollama_models_dir=ollama_models, lmstudio_dir=lmstudio_dir, allow_client_paths=allow_client_paths,
        keep_finished=keep_finished, max_running=max_running,
    )
    try:
        config.check()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"modelpull service on http://{shown}:{port}/ (API under /api/models)", err=True)
    run(config, log_level=log_level)


@main.command("list")
@click.argument("provider", required=False)
@_cache_option
@_ollama_host_option
@_ollama_models_option
@_lmstudio_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(provider: str | None, cache_dir: str | None, ollama_host: str | None,
                 ollama_models: str | None, lmstudio_dir: str | None, as_json: bool) -> None:
    """List downloaded models (huggingface, mlx, ollama, lmstudio; all by default)."""
    from .inventory import scan_inventory

    try:
        inventory = scan_inventory(provider, **_inventory_options(cache_dir, ollama_host, ollama_models, lmstudio_dir))
    except ModelpullError as exc:
        raise click.ClickException(f"[{exc.code}] {exc.message}") from None
    if as_json:
        click.echo(json.dumps({"models": [m.to_dict() for m in inventory.models], "notes": inventory.notes}))
        return
    if not inventory.models:
        click.echo("no models found")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("provider", "model", "size", "modified", "where"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for model in inventory.models:
            size = format_bytes(model.size_bytes)
            if model.partial_bytes:
                size += f" (+{format_bytes(model.partial_bytes)} partial)"
            modified = datetime.fromtimestamp(model.modified).strftime("%Y-%m-%d %H:%M") if model.modified else ""
            provider_label = model.provider + (" (mlx)" if model.mlx and model.provider == "huggingface" else "")
            table.add_row(provider_label, model.name, size, modified, model.path or model.source)
        Console(soft_wrap=True).print(table)
    for note in inventory.notes:
        click.echo(f"note: {note}", err=True)


@main.command("rm")
@click.argument("provider")
@click.argument("model")
@_cache_option
@_ollama_host_option
@_ollama_models_option
@_lmstudio_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_command(provider: str, model: str, cache_dir: str | None, ollama_host: str | None,
               ollama_models: str | None, lmstudio_dir: str | None, yes: bool) -> None:
    """Delete a downloaded MODEL of PROVIDER (huggingface, mlx, ollama, lmstudio)."""
    from .inventory import delete_model

    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete {provider} model {model}?", abort=True)
    try:
        result = delete_model(provider, model, **_inventory_options(cache_dir, ollama_host, ollama_models, lmstudio_dir))
    except ModelpullError as exc:
        raise click.ClickException(f"[{exc.code}] {exc.message}") from None
    click.echo(f"deleted {result['name']} ({format_bytes(result['freed_bytes'])} freed)")
