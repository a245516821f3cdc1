"""Shared helpers of the model tests: a small task on a ring label graph, one intra-op thread."""
import torch

from fact_fast.models import TaskInfo


def ring_graph(n):
    """Each of n classes linked to its two neighbours on a ring: (rowptr int64 [n+1], col int64 [2n])."""
    rowptr = torch.arange(n + 1) * 2
    col = torch.stack([(torch.arange(n) + 1) % n, (torch.arange(n) - 1) % n], 1).flatten()
    return rowptr, col


def ring_task(n, emb_dim=24, value=None, add_self_loops=True, prevalence=None, seed=None):
    """A TaskInfo of n classes "c0".."c<n-1>" with random label embeddings [n, emb_dim] (from ``seed``,
    else the global RNG) over :func:`ring_graph`."""
    rowptr, col = ring_graph(n)
    g = None if seed is None else torch.Generator().manual_seed(seed)
    return TaskInfo([f"c{i}" for i in range(n)], torch.randn(n, emb_dim, generator=g),
                    {"rowptr": rowptr, "col": col, "value": value, "add_self_loops": add_self_loops},
                    prevalence=prevalence)


def single_thread():
    """Generator for a module-scoped autouse fixture (``pytest.fixture(autouse=True,
    scope="module")(single_thread)``): one intra-op thread, as tiny models run ~10x faster than
    with two on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
