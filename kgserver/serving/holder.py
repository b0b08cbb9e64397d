"""The model holder: the versions being served, and hot swap when an alias moves.

Each served reference (``NAME@ALIAS``, ``NAME/VERSION``, a bundle path) maps to
one immutable :class:`ServedModel`. The whole mapping is replaced by a single
attribute assignment, so a reader sees either the old or the new version, never
a half-built one, and a request keeps the version it fetched until it finishes.
A background thread re-resolves every reference each ``poll_seconds``; when a
reference names a different version it builds that version (encoder, indexes)
off the request path and then swaps it in.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from kgserver.errors import ModelNotFound
from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

Resolver = Callable[[str], str]
"""``ref -> version`` that the reference names now (e.g. ``"codex-compgcn/3"``)."""

Builder = Callable[[str, str], ServedModel]
"""``(ref, version) -> ServedModel`` loading exactly that version."""


class ModelsNotReady(RuntimeError):
    """Requests arrived before the models finished loading."""


class ModelHolder:
    """Serves the current version of each reference and swaps in new ones."""

    def __init__(self, refs: list[str], resolve: Resolver, build: Builder, poll_seconds: float) -> None:
        if not refs:
            raise ValueError("at least one model reference is needed")
        self.refs = list(dict.fromkeys(refs))
        self.default_ref = self.refs[0]
        self.poll_seconds = poll_seconds
        self._resolve = resolve
        self._build = build
        self._served: dict[str, ServedModel] = {}
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return len(self._served) == len(self.refs)

    def load(self) -> None:
        """Load every reference's current version (raises the first failure, typed)."""
        for ref in self.refs:
            self._install(self._build(ref, self._resolve(ref)))

    def get(self, name: str = "") -> ServedModel:
        """The version answering ``name``: a served reference, its current version, or ``""``."""
        served = self._served
        if not self.ready:
            raise ModelsNotReady("models are still loading")
        if not name:
            return served[self.default_ref]
        if name in served:
            return served[name]
        for model in served.values():
            if model.version == name:
                return model
        serving = ", ".join(f"{ref} ({model.version})" for ref, model in served.items())
        raise ModelNotFound(f"model {name!r} is not served here; serving: {serving}")

    def current(self) -> list[ServedModel]:
        """Every served version, default first."""
        served = self._served
        return [served[ref] for ref in self.refs if ref in served]

    def poll_once(self) -> list[str]:
        """Re-resolve every reference; build and swap in moved ones. Returns the new versions.

        A reference that fails to resolve or load is logged and keeps its current
        version; the next poll tries again.
        """
        swapped = []
        for ref in self.refs:
            try:
                version = self._resolve(ref)
                current = self._served.get(ref)
                if current is not None and current.version == version:
                    continue
                log.info("%s now names %s; loading it", ref, version)
                self._install(self._build(ref, version))
                swapped.append(version)
                log.info("%s: now serving %s", ref, version)
            except Exception:
                log.exception("%s: could not load its new version; still serving the previous one", ref)
        return swapped

    def start_polling(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self.poll_seconds <= 0 or self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="kgserver-model-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)  # a load in progress dies with the process

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll_once()

    def _install(self, model: ServedModel) -> None:
        with self._write_lock:
            self._served = {**self._served, model.ref: model}
