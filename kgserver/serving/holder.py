"""The model holder: the versions being served, and hot swap when an alias moves.

Each served reference (``NAME@ALIAS``, ``NAME/VERSION``, a bundle path) maps to
one immutable :class:`ServedModel`. The whole mapping is replaced by a single
attribute assignment, so a reader sees either the old or the new version, never
a half-built one, and a request keeps the version it fetched until it finishes.
A background thread re-resolves every reference each ``poll_seconds``; when a
reference names a different version it builds that version (encoder, indexes)
off the request path, warms it (a few real requests through the whole answer
path) and then swaps it in.

A version that fails to load is remembered with the reference: the failure is
logged once (one line with the reason; the traceback only at DEBUG) and that
version is not fetched again until the reference names another one. Likewise a
reference that cannot be resolved (registry unreachable) is logged once until it
resolves again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kgserver.errors import ModelNotServed
from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

Resolver = Callable[[str], str]
"""``ref -> version`` that the reference names now (e.g. ``"codex-compgcn/3"``)."""

Builder = Callable[[str, str], ServedModel]
"""``(ref, version) -> ServedModel`` loading exactly that version."""

Warmer = Callable[[ServedModel], None]
"""Answers a few real requests with a freshly built version before it is served (raises if it cannot)."""

REASON_CHARS = 300
"""Most characters of a load or resolve failure's message in its one ERROR line."""


class ModelsNotReady(RuntimeError):
    """Requests arrived before the models finished loading."""


class ModelHolder:
    """Serves the current version of each reference and swaps in new ones."""

    def __init__(
        self, refs: list[str], resolve: Resolver, build: Builder, poll_seconds: float, warm: Warmer | None = None
    ) -> None:
        if not refs:
            raise ValueError("at least one model reference is needed")
        self.refs = list(dict.fromkeys(refs))
        self.default_ref = self.refs[0]
        self.poll_seconds = poll_seconds
        self._resolve = resolve
        self._build = build
        self._warm = warm
        self._served: dict[str, ServedModel] = {}
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._failed: dict[str, str] = {}  # ref -> the version that failed to load, until the ref moves
        self._unresolved: dict[str, str] = {}  # ref -> why it last failed to resolve, until it resolves

    @property
    def ready(self) -> bool:
        return len(self._served) == len(self.refs)

    def load(self) -> None:
        """Load every reference's current version (raises the first failure, typed)."""
        for ref in self.refs:
            self._install(self._ready(ref, self._resolve(ref)))

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
        raise ModelNotServed(name, [f"{ref} ({model.version})" for ref, model in served.items()])

    def current(self) -> list[ServedModel]:
        """Every served version, default first."""
        served = self._served
        return [served[ref] for ref in self.refs if ref in served]

    def poll_once(self) -> list[str]:
        """Re-resolve every reference; build and swap in moved ones. Returns the new versions.

        A reference that fails to resolve or load keeps its current version. A
        version that failed to load is not tried again while the reference still
        names it; a failure to resolve is retried on every poll but logged once.
        """
        swapped = []
        for ref in self.refs:
            version = self._resolved(ref)
            if version is None:
                continue
            current = self._served.get(ref)
            if current is not None and current.version == version:
                self._failed.pop(ref, None)
                continue
            if self._failed.get(ref) == version:
                continue
            log.info("%s now names %s; loading it", ref, version)
            try:
                self._install(self._ready(ref, version))
            except Exception as error:
                self._failed[ref] = version
                still = f"still serving {current.version}" if current is not None else "nothing served for it yet"
                log.error(
                    "%s: cannot load %s (%s); %s; not retried until %s names another version",
                    ref, version, _reason(error), still, ref,
                )
                log.debug("%s: loading %s failed", ref, version, exc_info=error)
                continue
            self._failed.pop(ref, None)
            swapped.append(version)
            log.info("%s: now serving %s", ref, version)
        return swapped

    def _resolved(self, ref: str) -> str | None:
        """The version ``ref`` names now, or None (logged once per streak of failures) if it cannot be resolved."""
        try:
            version = self._resolve(ref)
        except Exception as error:
            reason = _reason(error)
            if self._unresolved.get(ref) != reason:
                log.error("%s: cannot resolve (%s); keeping the current version, retrying every poll", ref, reason)
                log.debug("%s: resolving failed", ref, exc_info=error)
            self._unresolved[ref] = reason
            return None
        if self._unresolved.pop(ref, None) is not None:
            log.info("%s resolves again (to %s)", ref, version)
        return version

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

    def _ready(self, ref: str, version: str) -> ServedModel:
        """``version`` built and warmed: its first real request is not the one that pays for its first use."""
        model = self._build(ref, version)
        if self._warm is not None:
            self._warm(model)
        return model

    def replace(self, old: ServedModel, new: ServedModel) -> bool:
        """Warm ``new`` and swap it in for ``old`` (the same version at a newer store state)
        exactly as a version swap is done; refused (False) if ``old`` is no longer what its
        reference serves, so a store update never undoes a version swap that happened meanwhile.
        A warm-up failure raises and leaves ``old`` served."""
        if self._served.get(old.ref) is not old:
            return False  # not worth a warm-up
        if self._warm is not None:
            self._warm(new)
        with self._write_lock:
            if self._served.get(old.ref) is not old:
                return False
            self._served = {**self._served, new.ref: new}
            return True

    def rebuild(self, old: ServedModel) -> ServedModel | None:
        """Build ``old``'s version again (from the store as it is now) and :meth:`replace` ``old``
        with it; the new state, or None if ``old`` was swapped out meanwhile."""
        new = self._build(old.ref, old.version)
        return new if self.replace(old, new) else None

    def _install(self, model: ServedModel) -> None:
        with self._write_lock:
            self._served = {**self._served, model.ref: model}


def _reason(error: Exception) -> str:
    """``Type: message`` on one line, cut to :data:`REASON_CHARS` (the full traceback goes to DEBUG)."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS] + "..."
