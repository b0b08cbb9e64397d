"""Where served models come from: the MLflow registry (or a bundle path) via :mod:`kgserver.models`.

Returns the two functions the holder needs: ``resolve(ref)`` names the version a
reference points at now, ``build(ref, version)`` loads exactly that version and
prepares it for serving. Loading by the resolved version (not by the alias again)
means an alias that moves twice in quick succession cannot mix versions.
"""

from __future__ import annotations

from kgserver.serving.holder import Builder, Resolver
from kgserver.serving.served import ServedModel


def registry_source(tracking_uri: str | None, store_url: str | None) -> tuple[Resolver, Builder]:
    """``(resolve, build)`` over the tracking store at ``tracking_uri`` and the store at ``store_url``."""
    from kgserver import models

    def resolve(ref: str) -> str:
        return models.resolve(ref, tracking_uri=tracking_uri)

    def build(ref: str, version: str) -> ServedModel:
        return ServedModel.build(ref, models.load(version, tracking_uri=tracking_uri), store_url=store_url)

    return resolve, build
