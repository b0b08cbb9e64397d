"""The plugin contract: registry names, and hyperparameter schemas that leave nothing unchecked."""

from __future__ import annotations

import ast
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from kgserver import registry
from kgserver.registry import (
    POSITIVE,
    Bounds,
    Hyperparameters,
    KGModel,
    available_models,
    register_model,
)
from kgserver_plugins import decoders

BUILT_IN = ("rgcn", "compgcn", "gatv2")
TRAINING_DIR = Path(registry.__file__).resolve().parent / "training"


@pytest.fixture()
def scratch_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in a test go to copies of the registries, so the session's stay as installed."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(available_models()))
    monkeypatch.setattr(decoders, "DECODERS", dict(decoders.DECODERS))


def make_model_class(module: str, qualname: str = "Twin") -> type[KGModel]:
    return type(qualname, (KGModel,), {"__module__": module, "__qualname__": qualname})


@pytest.mark.usefixtures("scratch_registries")
def test_a_model_name_taken_by_a_class_of_another_module_is_refused() -> None:
    register_model("twin")(make_model_class("first_plugin"))
    with pytest.raises(
        ValueError, match=r"model name 'twin' is already registered by first_plugin\.Twin; second_plugin\.Twin"
    ):
        register_model("twin")(make_model_class("second_plugin"))
    assert registry._REGISTRY["twin"].__module__ == "first_plugin"


@pytest.mark.usefixtures("scratch_registries")
def test_the_same_class_registering_again_is_accepted() -> None:
    register_model("twin")(make_model_class("first_plugin"))
    reloaded = register_model("twin")(make_model_class("first_plugin"))  # the module imported once more
    assert registry._REGISTRY["twin"] is reloaded


@pytest.mark.usefixtures("scratch_registries")
def test_a_decoder_name_taken_by_another_class_is_refused() -> None:
    imposter = type("DistMult", (decoders.Decoder,), {"__module__": "other_plugin", "__qualname__": "DistMult"})
    with pytest.raises(
        ValueError, match=r"decoder name 'distmult' is already registered by kgserver_plugins\.decoders\.DistMult"
    ):
        decoders.register_decoder("distmult")(imposter)
    assert decoders.DECODERS["distmult"] is not imposter


@pytest.mark.usefixtures("scratch_registries")
def test_a_schema_with_an_unbounded_number_is_refused_at_registration() -> None:
    @dataclass
    class Loose(Hyperparameters):
        temperature: float = 1.0

    class LooseModel(KGModel):
        hyperparameters = Loose

    with pytest.raises(TypeError, match=r"Loose\.temperature is numeric but declares no Bounds"):
        register_model("loose")(LooseModel)
    assert "loose" not in registry._REGISTRY


@pytest.mark.usefixtures("scratch_registries")
def test_a_schema_with_a_free_string_is_refused_at_registration() -> None:
    @dataclass
    class Loose(Hyperparameters):
        norm: str = "batch"

    class LooseModel(KGModel):
        hyperparameters = Loose

    with pytest.raises(TypeError, match=r"Loose\.norm is a string but declares no allowed values"):
        register_model("loose")(LooseModel)


@pytest.mark.usefixtures("scratch_registries")
def test_a_declared_schema_registers_and_checks_its_own_fields() -> None:
    @dataclass
    class Tidy(Hyperparameters):
        hidden: int = 8
        bounds: ClassVar[Mapping[str, Bounds]] = {"hidden": POSITIVE}

    class TidyModel(KGModel):
        hyperparameters = Tidy

    register_model("tidy")(TidyModel)
    assert Tidy.declared_bounds()["learning_rate"] == Bounds(low=0)  # the base's, merged
    with pytest.raises(ValueError, match="hidden must be at least 1, got 0"):
        Tidy(hidden=0)


def numeric_fields() -> list[tuple[str, str, str]]:
    """(plugin, field, kind) for every int and float field of every built-in plugin's schema."""
    rows = []
    for name in BUILT_IN:
        for spec in dataclasses.fields(available_models()[name].hyperparameters):
            kind = registry.field_kind(spec.type)
            if kind in ("int", "float"):
                rows.append((name, spec.name, kind))
    return rows


@pytest.mark.parametrize(("plugin", "key", "kind"), numeric_fields())
def test_every_numeric_hyperparameter_is_range_checked(plugin: str, key: str, kind: str) -> None:
    schema = available_models()[plugin].hyperparameters
    bounds = schema.declared_bounds()[key]
    assert bounds.low is not None, f"{key} has no lower bound"
    below = bounds.low if bounds.low_open else bounds.low - 1
    with pytest.raises(ValueError, match=rf"^{key} must be"):
        schema.parse_assignments([f"{key}={int(below) if kind == 'int' else below}"])
    if kind == "float":
        for raw in ("nan", "inf", "-inf"):
            with pytest.raises(ValueError, match=rf"^{key} must be a finite number, got {raw}$"):
                schema.parse_assignments([f"{key}={raw}"])


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("learning_rate=nan", "learning_rate must be a finite number, got nan"),
        ("learning_rate=-1", "learning_rate must be at least 0, got -1.0"),
        ("weight_decay=-0.1", "weight_decay must be at least 0, got -0.1"),
        ("batch_size=0", "batch_size must be at least 1, got 0"),
        ("num_negatives=-5", "num_negatives must be at least 1, got -5"),
        ("label_smoothing=inf", "label_smoothing must be a finite number, got inf"),
        ("negative_slope=-0.2", "negative_slope must be at least 0, got -0.2"),
    ],
)
def test_bad_values_name_the_hyperparameter_and_the_range(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        available_models()["gatv2"].hyperparameters.parse_assignments([assignment])


def test_saved_values_of_the_wrong_type_are_refused() -> None:
    schema = available_models()["rgcn"].hyperparameters
    with pytest.raises(ValueError, match="embedding_dim must be a int, got '16'"):
        schema.from_dict({"embedding_dim": "16"})
    with pytest.raises(ValueError, match="residual must be a bool, got 1"):
        schema.from_dict({"residual": 1})
    with pytest.raises(ValueError, match="dropout must be a finite number, got nan"):
        schema.from_dict({"dropout": math.nan})
    assert schema.from_dict({"learning_rate": 1}).learning_rate == 1.0  # a JSON integer for a float field


def test_num_layers_is_part_of_the_base_contract() -> None:
    assert Hyperparameters().num_layers == 1
    for name in BUILT_IN:
        assert "num_layers" in {f.name for f in dataclasses.fields(available_models()[name].hyperparameters)}


def test_from_saved_drops_removed_keys_and_says_which() -> None:
    schema = available_models()["compgcn"].hyperparameters
    hparams, dropped = schema.from_saved({"embedding_dim": 16, "relation_dropout": 0.1, "zzz": 1})
    assert hparams.embedding_dim == 16 and dropped == ["relation_dropout", "zzz"]


def test_training_reads_no_hyperparameter_through_getattr() -> None:
    for path in TRAINING_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
                assert "hparams" not in ast.unparse(node), f"{path.name}:{node.lineno}: {ast.unparse(node)}"
