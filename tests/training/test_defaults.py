"""The size-aware defaults of ``kgserver train``, at the sizes they were made for."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kgserver.errors import ConfigurationError
from kgserver.registry import get_model
from kgserver.training import TrainConfig
from kgserver.training.defaults import PARAMETER_SHARE, GraphSize, Machine, bf16_matmul_speedup, size_defaults
from kgserver.training.mode import parameter_bytes

CODEX_S = GraphSize(entities=2_034, relations=42, train_triples=32_888)
FB15K_237 = GraphSize(entities=14_541, relations=237, train_triples=272_115)
WN18RR = GraphSize(entities=40_943, relations=11, train_triples=86_835)
MILLION = GraphSize(entities=1_000_000, relations=100, train_triples=10_000_000, valid_triples=100_000)
THIS_MACHINE = Machine(memory_bytes=24 * 2**30, cores=2)
PLUGINS = ("rgcn", "compgcn", "gatv2")


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("memory_gib", [4, 24, 256])
def test_codex_s_keeps_the_tuned_defaults(plugin: str, memory_gib: int) -> None:
    model_class = get_model(plugin)
    machine = Machine(memory_bytes=memory_gib * 2**30, cores=2)
    sizing = size_defaults(CODEX_S, machine, model_class, {}, TrainConfig(), frozenset())
    assert sizing.hyperparameters == model_class.hyperparameters()
    # full-graph training is what --mode auto has always chosen on CoDEx-S; threads are the cores
    assert sizing.config == dataclasses.replace(TrainConfig(), mode="full", threads=2)
    assert sizing.config.eval_every == 5 and sizing.hyperparameters.batch_size == 1024
    assert set(sizing.chosen_hyperparameters) == {"embedding_dim", "batch_size"}
    assert all(choice.reason.startswith("the default") for choice in sizing.chosen_hyperparameters.values())


def test_fb15k_237_gets_a_larger_batch_and_validates_every_epoch() -> None:
    sizing = size_defaults(FB15K_237, THIS_MACHINE, get_model("compgcn"), {}, TrainConfig(), frozenset())
    assert sizing.config.mode == "full"
    assert sizing.hyperparameters.batch_size == 4096  # a quarter of the whole-graph encodes per epoch
    assert sizing.config.eval_every == 1  # an epoch takes minutes: validating every 5 is too rare
    assert sizing.hyperparameters.embedding_dim == 512  # the vocabulary fits at the tuned dimension
    assert sizing.hyperparameters.learning_rate == get_model("compgcn").hyperparameters().learning_rate
    assert "4x the default 1024" in sizing.chosen_hyperparameters["batch_size"].reason
    assert "instead of 5" in sizing.chosen_config["eval_every"].reason
    # evaluations an epoch apart: one noisy evaluation must not halve the learning rate
    assert sizing.config.lr_patience == 2
    assert "more often than every 5" in sizing.chosen_config["lr_patience"].reason


def test_a_set_batch_whose_scores_exceed_their_share_of_memory_stands_with_a_warning() -> None:
    compgcn = get_model("compgcn")
    sizing = size_defaults(WN18RR, THIS_MACHINE, compgcn, {"batch_size": 4096}, TrainConfig(), frozenset())
    assert sizing.hyperparameters.batch_size == 4096 and "batch_size" not in sizing.chosen_hyperparameters
    (warning,) = sizing.warnings
    # 4096 x 40,943 scores x 24 bytes = 3.75 GiB, over an eighth of 24 GiB
    assert warning.startswith("batch_size = 4096 (set): a step's score matrices, about 3.75 GiB, exceed")
    assert warning.endswith("; 2048 fits")
    fits = size_defaults(WN18RR, THIS_MACHINE, compgcn, {"batch_size": 2048}, TrainConfig(), frozenset())
    assert fits.warnings == ()
    assert size_defaults(WN18RR, THIS_MACHINE, compgcn, {}, TrainConfig(), frozenset()).warnings == ()


def test_a_million_entities_get_a_dimension_that_fits_memory() -> None:
    sizing = size_defaults(MILLION, THIS_MACHINE, get_model("compgcn"), {}, TrainConfig(), frozenset())
    dim = sizing.hyperparameters.embedding_dim
    budget = THIS_MACHINE.memory_bytes * PARAMETER_SHARE
    assert dim % 32 == 0 and 32 <= dim < 512
    assert parameter_bytes(MILLION.entities, MILLION.relations, dim) <= budget
    assert parameter_bytes(MILLION.entities, MILLION.relations, dim + 32) > budget  # the largest that fits
    assert "lowered from 512" in sizing.chosen_hyperparameters["embedding_dim"].reason
    assert sizing.config.mode == "sampled" and sizing.hyperparameters.batch_size == 1024
    assert sizing.config.eval_batch_size < 256  # scoring 256 queries against 1M entities would not fit
    # every evaluation scoring 100,000 validation triples against 1M entities would take many minutes
    assert sizing.config.valid_limit == 4_294 and "a sample of 4,294" in sizing.chosen_config["valid_limit"].reason
    small = size_defaults(FB15K_237, THIS_MACHINE, get_model("compgcn"), {}, TrainConfig(), frozenset())
    assert small.config.valid_limit is None and "valid_limit" not in small.chosen_config


def test_what_the_user_gives_always_wins() -> None:
    assigned = {"embedding_dim": 512, "batch_size": 256}
    config = TrainConfig(eval_every=7, threads=1, mode="sampled")
    given = {"eval_every", "lr_patience", "valid_limit", "threads", "precision"}
    sizing = size_defaults(MILLION, THIS_MACHINE, get_model("compgcn"), assigned, config, given)
    assert sizing.hyperparameters.embedding_dim == 512 and sizing.hyperparameters.batch_size == 256
    assert (sizing.config.eval_every, sizing.config.threads, sizing.config.mode) == (7, 1, "sampled")
    assert set(sizing.chosen_hyperparameters) == set()
    assert set(sizing.chosen_config) == {"eval_batch_size"}  # no option sets it
    # a mode the user forces is the one the batch is chosen for: sampled steps keep the default
    forced = size_defaults(FB15K_237, THIS_MACHINE, get_model("compgcn"), {}, TrainConfig(mode="sampled"), set())
    assert forced.config.mode == "sampled" and forced.hyperparameters.batch_size == 1024
    assert "mode" not in forced.chosen_config


@pytest.mark.parametrize(
    ("speedup", "precision", "reason"),
    [
        (3.9, "bf16", "measured 3.9x as fast"),
        (1.5, "bf16", "measured 1.5x as fast"),
        (1.2, "fp32", "measured 1.2x as fast as float32 on this device, under"),
        (1.46, "fp32", "measured 1.46x as fast as float32 on this device, under 1.5x"),
        (0.0091, "fp32", "measured 0.0091x as fast as float32 on this device (slower than float32: likely no"),
        (0.0, "fp32", "this device has no bfloat16 matrix products"),
    ],
)
def test_bf16_is_chosen_where_it_was_measured_faster(speedup: float, precision: str, reason: str) -> None:
    machine = dataclasses.replace(THIS_MACHINE, bf16_speedup=speedup)
    sizing = size_defaults(FB15K_237, machine, get_model("compgcn"), {}, TrainConfig(), frozenset())
    assert sizing.config.precision == precision
    assert reason in sizing.chosen_config["precision"].reason
    forced = size_defaults(FB15K_237, machine, get_model("compgcn"), {}, TrainConfig(precision="fp32"), {"precision"})
    assert forced.config.precision == "fp32" and "precision" not in forced.chosen_config


def test_a_plugin_that_does_not_declare_bf16_trains_in_fp32() -> None:
    compgcn = get_model("compgcn")
    undeclared = type("Undeclared", (compgcn,), {"trains_in_bf16": False, "name": "undeclared"})
    fast = dataclasses.replace(THIS_MACHINE, bf16_speedup=3.9)
    sizing = size_defaults(FB15K_237, fast, undeclared, {}, TrainConfig(), frozenset())
    assert sizing.config.precision == "fp32" and "trains_in_bf16" in sizing.chosen_config["precision"].reason
    with pytest.raises(ConfigurationError, match=r"'undeclared' does not declare .*trains_in_bf16"):
        size_defaults(FB15K_237, fast, undeclared, {}, TrainConfig(precision="bf16"), {"precision"})


def test_the_bf16_probe_times_this_machine() -> None:
    speedup = bf16_matmul_speedup(torch.device("cpu"), 1)
    assert 0.0 < speedup < 100.0  # a ratio of two measured times; which side wins depends on the CPU


def test_a_choice_the_plugin_rejects_is_a_configuration_error() -> None:
    # ConvE's height must divide the dimension: 128 divides the default 512, not the 320 chosen for memory
    conve = {"decoder": "conve", "conve_height": 128}
    with pytest.raises(ConfigurationError, match=r"rejects the size-aware embedding_dim=320.*--set"):
        size_defaults(MILLION, THIS_MACHINE, get_model("compgcn"), conve, TrainConfig(), set())


def test_a_vocabulary_too_large_even_at_dimension_8_is_a_configuration_error() -> None:
    huge = GraphSize(entities=2_000_000_000, relations=10, train_triples=4_000_000_000)
    with pytest.raises(ConfigurationError, match="even at embedding_dim 8.*--set embedding_dim"):
        size_defaults(huge, THIS_MACHINE, get_model("rgcn"), {}, TrainConfig(), set())
