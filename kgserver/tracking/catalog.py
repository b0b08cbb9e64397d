"""What the ``kgserver models`` commands show: registered models, versions, aliases, metrics.

Everything here returns plain dicts (JSON-ready); the CLI decides how to print them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kgserver.errors import ModelNotFound
from kgserver.tracking.refs import check_alias, parse_ref, registry_errors

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

DEFAULT_ALIAS = "champion"
SUMMARY_METRICS = (
    "test_mrr",
    "test_hits_at_1",
    "test_hits_at_3",
    "test_hits_at_10",
    "test_mean_rank",
    "valid_mrr",
    "valid_hits_at_1",
    "valid_hits_at_3",
    "valid_hits_at_10",
    "valid_mean_rank",
)


def list_models(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered model with its versions (newest first), aliases and test MRR."""
    models = []
    for registered in _pages(lambda token: client.search_registered_models(max_results=200, page_token=token)):
        versions = sorted(_versions(client, registered.name), key=lambda v: int(v.version), reverse=True)
        aliases = {alias: str(version) for alias, version in sorted(registered.aliases.items())}
        models.append(
            {
                "name": registered.name,
                "description": registered.description or "",
                "aliases": aliases,
                "versions": [_version_summary(version, aliases) for version in versions],
            }
        )
    return sorted(models, key=lambda model: model["name"])


def show(client: MlflowClient, ref: str) -> dict[str, Any]:
    """One version (``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``) with its run's metrics, params and tags.

    A bare ``NAME`` shows its newest version.
    """
    with registry_errors(ref):
        version = _find_version(client, ref)
        aliases = client.get_registered_model(version.name).aliases
        run = client.get_run(version.run_id) if version.run_id else None
    detail = _version_summary(version, aliases)
    detail.update(
        {
            "name": version.name,
            "source": version.source,
            "status": version.status,
            "description": version.description or "",
            "tags": dict(version.tags),
            "metrics": dict(run.data.metrics) if run else {},
            "params": dict(run.data.params) if run else {},
            "run_tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} if run else {},
            "experiment_id": run.info.experiment_id if run else None,
        }
    )
    return detail


def promote(client: MlflowClient, name: str, version: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Point ``name@alias`` at ``version``; returns the version it pointed at before (if any).

    An alias MLflow would refuse is a :class:`~kgserver.errors.ConfigurationError` naming it
    (MLflow's own refusal would read as "not found").
    """
    check_alias(alias)
    if not version.isdigit():
        raise ModelNotFound(f"model version must be a number, got {version!r}")
    with registry_errors(f"{name}/{version}"):
        client.get_model_version(name, version)
        previous = client.get_registered_model(name).aliases.get(alias)
        client.set_registered_model_alias(name, alias, version)
    return {"name": name, "alias": alias, "version": version, "previous": str(previous) if previous else None}


def compare(client: MlflowClient, name: str) -> dict[str, Any]:
    """All versions of ``name`` side by side: summary metrics and every run parameter."""
    with registry_errors(name):
        aliases = client.get_registered_model(name).aliases
        versions = sorted(_versions(client, name), key=lambda v: int(v.version))
        runs = {v.version: client.get_run(v.run_id) if v.run_id else None for v in versions}
    columns = []
    for version in versions:
        run = runs[version.version]
        columns.append(
            {
                **_version_summary(version, aliases),
                "metrics": {key: run.data.metrics.get(key) for key in SUMMARY_METRICS} if run else {},
                "params": dict(run.data.params) if run else {},
            }
        )
    param_keys = sorted({key for column in columns for key in column["params"]})
    differing = [
        key for key in param_keys if len({column["params"].get(key) for column in columns}) > 1
    ]
    return {"name": name, "versions": columns, "params": param_keys, "differing_params": differing}


def _find_version(client: MlflowClient, ref: str) -> ModelVersion:
    if "@" not in ref and "/" not in ref:
        versions = _versions(client, ref)
        if not versions:
            raise ModelNotFound(f"no registered model named {ref!r}")
        return max(versions, key=lambda v: int(v.version))
    parsed = parse_ref(ref)
    if parsed.kind == "alias":
        return client.get_model_version_by_alias(parsed.name, parsed.alias)
    if parsed.kind == "version":
        return client.get_model_version(parsed.name, parsed.version)
    raise ModelNotFound(f"{ref!r} is not a registered model reference (NAME, NAME@ALIAS or NAME/VERSION)")


def _version_summary(version: ModelVersion, aliases: dict[str, Any]) -> dict[str, Any]:
    """The version's list-row; ``aliases`` is the registered model's alias -> version map
    (MLflow's version search leaves a version's own alias list empty)."""
    test_mrr = version.tags.get("test_mrr")
    return {
        "version": str(version.version),
        "aliases": sorted(alias for alias, number in aliases.items() if str(number) == str(version.version)),
        "test_mrr": float(test_mrr) if test_mrr is not None else None,
        "graph": version.tags.get("graph"),
        "model_type": version.tags.get("model_type"),
        "run_id": version.run_id,
        "created": datetime.fromtimestamp(version.creation_timestamp / 1000, tz=UTC).isoformat(
            timespec="seconds"
        ),
    }


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    return list(
        _pages(lambda token: client.search_model_versions(f"name = '{quoted}'", max_results=200, page_token=token))
    )


def _pages(fetch: Any) -> Iterator[Any]:
    """Follow MLflow's page tokens to the end."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = page.token
        if not token:
            return
