"""`kmot registry` commands: push, list, show, promote, rollback, history, pull, gc, verify."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from kmot.cli._common import app, console

registry_app = typer.Typer(
    help="Model registry: versioned, checksummed artifacts; promote, rollback, pull, gc, "
         "verify.",
    no_args_is_help=True,
)
# A str, not a Path: Path("mlflow://host:5000") would collapse the "//".
RegistryRoot = Annotated[
    Optional[str],
    typer.Option("--root", help="registry folder, or an MLflow server as mlflow://HOST:PORT "
                                "(default: $KMOT_REGISTRY or ~/.kmot/registry)"),
]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON")]


def _open_registry(root: Optional[str]):
    from kmot.registry import Registry

    return Registry(root)


def _short_metrics(metrics: dict, limit: int = 3) -> str:
    return "\n".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:limit])


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ")


@registry_app.command(name="push")
def registry_push(
    artifact: Annotated[Path, typer.Argument(help="the file to store (e.g. model.tflite)")],
    name: Annotated[str, typer.Option(help="model name")],
    report: Annotated[Optional[Path], typer.Option(help="report.json to keep with it")] = None,
    tag: Annotated[Optional[list[str]], typer.Option(help="label (repeatable)")] = None,
    meta: Annotated[
        Optional[list[str]], typer.Option(help="KEY=VALUE metadata (repeatable)")
    ] = None,
    promote: Annotated[bool, typer.Option(help="also make it the production version")] = False,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Store an artifact as the next version of NAME (checksummed, content-addressed)."""
    from kmot.errors import RegistryError

    pairs = [item.split("=", 1) for item in meta or ()]
    if any(len(pair) != 2 or not pair[0] for pair in pairs):
        raise RegistryError(f"Expected --meta KEY=VALUE. Received: --meta {meta}")
    registry = _open_registry(root)
    version = registry.push(artifact, name=name, report=report, metadata=dict(pairs),
                            tags=tag or ())
    if promote:
        version = registry.promote(name, version.version)
    if as_json:
        print(json.dumps(version.to_dict(), indent=2))
        return
    console.print(f"pushed {version.label}: {version.size_bytes:,} bytes, sha256 "
                  f"{version.sha256[:12]}" + (" (production)" if promote else ""), soft_wrap=True)


@registry_app.command(name="list")
def registry_list(
    name: Annotated[Optional[str], typer.Argument(help="list this model's versions")] = None,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """List models (name, versions, production), or every version of NAME."""
    registry = _open_registry(root)
    rows = registry.models() if name is None else registry.list(name)
    if as_json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if name is None:
        table = Table(title=f"models in {registry.root} (times UTC)")
        for col in ("name", "versions", "latest", "production", "updated"):
            table.add_column(col)
        for m in rows:
            production = "-" if m.production_version is None else f"v{m.production_version}"
            table.add_row(m.name, str(m.num_versions), f"v{m.latest_version}", production,
                          _when(m.updated_at))
    else:
        table = Table(title=f"{name} (* = production; times UTC)")
        tagged = any(v.tags for v in rows)
        for col in ("version", "created", "sha256"):
            table.add_column(col, no_wrap=True)
        for col in ("source", "metrics", *(("tags",) if tagged else ())):
            table.add_column(col, overflow="fold")
        for v in rows:
            cells = [f"v{v.version}{' *' if v.production else ''}", _when(v.created_at),
                     v.sha256[:10], v.source, _short_metrics(v.metrics)]
            table.add_row(*cells, *((", ".join(v.tags),) if tagged else ()))
    console.print(table)


@registry_app.command(name="show")
def registry_show(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[
        Optional[int], typer.Argument(help="default: production, else latest")
    ] = None,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Show one version: checksum, size, source, metrics, metadata (--json: and the report)."""
    v = _open_registry(root).show(name, version)
    if as_json:
        print(json.dumps(v.to_dict(), indent=2))
        return
    table = Table(title=v.label + (" (production)" if v.production else ""), show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = {"sha256": v.sha256, "bytes": f"{v.size_bytes:,}", "created": v.created_at,
            "source": v.source, "tags": ", ".join(v.tags) or "-",
            "report": "attached (--json)" if v.report is not None else "-"}
    rows.update({f"metric {k}": f"{x:.6g}" for k, x in v.metrics.items()})
    rows.update({f"meta {k}": json.dumps(x) if not isinstance(x, str) else x
                 for k, x in v.metadata.items()})
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


@registry_app.command(name="promote")
def registry_promote(
    name: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[int, typer.Argument(help="version to make production")],
    root: RegistryRoot = None,
) -> None:
    """Make VERSION the production version of NAME (the previous one stays for rollback)."""
    v = _open_registry(root).promote(name, version)
    console.print(f"{v.label} is production")


@registry_app.command(name="rollback")
def registry_rollback(
    name: Annotated[str, typer.Argument(help="model name")],
    root: RegistryRoot = None,
) -> None:
    """Make the previous production version of NAME current again (atomic)."""
    v = _open_registry(root).rollback(name)
    console.print(f"rolled back: {v.label} is production again")


@registry_app.command(name="history")
def registry_history(
    name: Annotated[str, typer.Argument(help="model name")],
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Every promote and rollback of NAME, oldest first, with each version's report."""
    registry = _open_registry(root)
    events = registry.history(name)
    metrics = {v.version: v.metrics for v in registry.list(name)}
    if as_json:
        print(json.dumps([{**e.to_dict(), "metrics": metrics.get(e.version, {})}
                          for e in events], indent=2))
        return
    table = Table(title=f"{name}: production history")
    for col in ("at", "action", "from", "to", "its report"):
        table.add_column(col)
    for e in events:
        table.add_row(e.at, e.action, "-" if e.previous is None else f"v{e.previous}",
                      f"v{e.version}", Text(_short_metrics(metrics.get(e.version, {})) or "-"))
    console.print(table)


@registry_app.command(name="pull")
def registry_pull(
    name: Annotated[str, typer.Argument(help="model name")],
    output: Annotated[
        str, typer.Option("-o", "--output", help="file, or folder (existing or ending in /)")
    ] = ".",
    version: Annotated[
        Optional[int], typer.Option(help="default: production, else latest")
    ] = None,
    root: RegistryRoot = None,
) -> None:
    """Copy a version's artifact out, verifying its sha256 (nothing is written on mismatch)."""
    path = _open_registry(root).pull(name, version, dest=output)
    console.print(f"wrote {path} (sha256 verified)", soft_wrap=True)


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(text: str) -> float:
    """Seconds from ``3600``, ``90s``, ``30m`` or ``1h``."""
    from kmot.errors import RegistryError

    match = _DURATION.fullmatch(text.lower())
    if match is None:
        raise RegistryError(
            f"Expected --grace as a duration: seconds (3600 or 90s), minutes (30m) or hours "
            f"(1h), >= 0. Received: --grace {text!r}")
    return float(match[1]) * _UNIT_S[match[2]]


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


@registry_app.command(name="gc")
def registry_gc(
    grace: Annotated[str, typer.Option(
        help="keep files written more recently than this (3600, 90s, 30m, 1h): a push may "
             "still need them")] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would go")] = False,
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Remove stored files no version refers to, and partial files of killed writes.

    Safe while others push: files younger than --grace are kept.
    """
    result = _open_registry(root).gc(grace=_parse_duration(grace), dry_run=dry_run)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for digest in result.removed_objects:
        console.print(f"{verb} object {digest}", soft_wrap=True)
    for partial in result.removed_partials:
        console.print(f"{verb} partial file {partial}", soft_wrap=True)
    console.print(
        f"{verb} {_count(len(result.removed_objects), 'unreferenced object')} and "
        f"{_count(len(result.removed_partials), 'partial file')} "
        f"({result.freed_bytes:,} bytes); kept "
        f"{_count(result.referenced_objects, 'referenced object')} and "
        f"{_count(result.kept_recent, 'file')} younger than {_duration(result.grace_s)}",
        soft_wrap=True)


@registry_app.command(name="verify")
def registry_verify(
    as_json: AsJson = False,
    root: RegistryRoot = None,
) -> None:
    """Check every stored object against its sha256; exit 1 if any is missing or corrupted."""
    result = _open_registry(root).verify()
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for p in result.problems:
            found = "" if p.found_sha256 is None else \
                f": found sha256 {p.found_sha256} ({p.found_bytes:,} bytes)"
            console.print(f"{p.problem.upper()} {', '.join(p.versions)}: expected sha256 "
                          f"{p.sha256} ({p.size_bytes:,} bytes) at {p.path}{found}",
                          soft_wrap=True)
        read = (f"{_count(result.checked_versions, 'version')}, "
                f"{result.checked_bytes:,} bytes read")
        if result.ok:
            console.print(f"verified {_count(result.checked_objects, 'object')} ({read}): "
                          f"every sha256 matches", soft_wrap=True)
        else:
            console.print(f"{len(result.problems)} of {_count(result.checked_objects, 'object')}"
                          f" failed verification ({read}). Restore each from a trusted copy: "
                          f"pushing the file again rewrites its object", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(1)


app.add_typer(registry_app, name="registry")
