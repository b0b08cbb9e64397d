"""Explanation benchmark: ExplainPrediction latency over gRPC on an FB15k-237-size model.

FB15k-237's real vocabulary and training graph (14,541 entities, 237 relations,
272,115 training triples) feed a real plugin with random weights (the work of an
explanation does not depend on training: one encoding of the triple's
neighbourhood, one backward pass, a path search), saved as a bundle and served
by the real ``kgserver serve`` process. One client explains FB15k-237's test
triples one after another (k = 10 by default); the first call, which builds the
version's explainer, is reported on its own and left out of the percentiles.
The same triples are also explained in-process, with the neighbourhood sizes.

    .venv/bin/python bench/explain.py [--plugin compgcn] [--layers 1] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import percentile
from serve import fb15k237_snapshot, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="compgcn")
    parser.add_argument("--layers", type=int, default=1, help="encoder layers (the plugins' default is 1)")
    parser.add_argument("--dim", type=int, default=0, help="embedding dimension (0: the plugin's default)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300, help="explanations measured (test triples, in file order)")
    parser.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    options = parser.parse_args()
    torch.set_num_threads(options.torch_threads)

    from kgserver.client import KGClient
    from kgserver.explain import Explainer
    from kgserver.explain.neighbourhood import neighbourhood
    from kgserver.registry import get_model
    from kgserver.tracking.bundle import save_bundle

    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}"
    )
    snapshot = fb15k237_snapshot()
    torch.manual_seed(0)
    model_class = get_model(options.plugin)
    values: dict[str, object] = {"num_layers": options.layers}
    if options.dim:
        values["embedding_dim"] = options.dim
    hparams = model_class.hyperparameters.from_dict(values)
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams).eval()
    print(
        f"model: {options.plugin}, {options.layers} layer(s), dim {hparams.embedding_dim}, decoder "
        f"{getattr(hparams, 'decoder', '?')}, {snapshot.num_entities} entities, {len(snapshot.train)} training triples"
    )
    triples = snapshot.test[: options.calls + 1].tolist()

    with tempfile.TemporaryDirectory(prefix="kgserver-bench-") as scratch:
        work = Path(scratch)
        bundle = save_bundle(work / "bundle", model, snapshot)
        process, address, command = start_server(
            bundle, work / "server.log", ["--torch-threads", str(options.torch_threads)]
        )
        print(f"server: {' '.join(command[1:])}")
        try:
            with KGClient(address, timeout=600) as client:
                names = snapshot.entities, snapshot.relations

                def call(h: int, r: int, t: int) -> None:
                    client.explain(names[0][h], names[1][r], names[0][t], options.k)

                started = time.perf_counter()
                call(*triples[0])
                first = time.perf_counter() - started
                latencies = []
                for h, r, t in triples[1:]:
                    started = time.perf_counter()
                    call(h, r, t)
                    latencies.append(time.perf_counter() - started)
        finally:
            process.terminate()
            process.wait(60)

    explainer = Explainer(model, snapshot.train)
    inline, edges = [], []
    for h, r, t in triples[1:]:
        started = time.perf_counter()
        explainer.explain(h, r, t, options.k)
        inline.append(time.perf_counter() - started)
        edges.append(len(neighbourhood(explainer.graph, [h, t], options.layers).edge_ids))

    def summary(values: list[float]) -> str:
        return (
            f"p50 {percentile(values, 0.5) * 1e3:.1f} ms, p90 {percentile(values, 0.9) * 1e3:.1f} ms, "
            f"p99 {percentile(values, 0.99) * 1e3:.1f} ms, max {max(values) * 1e3:.1f} ms"
        )

    print(
        f"gRPC, one client, k={options.k}, {len(latencies)} calls: {summary(latencies)}; "
        f"first call (builds the explainer) {first * 1e3:.0f} ms"
    )
    print(f"in-process Explainer.explain: {summary(inline)}")
    print(
        f"neighbourhood message edges: median {percentile(edges, 0.5):.0f}, p99 {percentile(edges, 0.99):.0f}, "
        f"max {max(edges)}"
    )


if __name__ == "__main__":
    main()
