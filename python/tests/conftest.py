"""pytest fixtures: loopback clusters (netstorm.testing.Cluster) whose processes are killed
after each test, their logs printed when it fails."""

import sys

import pytest

from netstorm.testing import Cluster, free_ports  # noqa: F401 (tests import free_ports here)


@pytest.fixture
def make_cluster(tmp_path, request):
    made = []

    def make(**kw):
        c = Cluster(tmp_path / f"c{len(made)}", **kw) if made else Cluster(tmp_path, **kw)
        made.append(c)
        return c

    yield make
    failed = getattr(request.node, "rep_call", None)
    for c in made:
        c.stop()
        if failed is not None and failed.failed:
            sys.stderr.write(c.logs() + "\n")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    setattr(item, "rep_" + rep.when, rep)


def run_nodes(cluster, target, *args, timeout=120):
    """Runs ``target(config, node, *args)`` for every node at once, one thread per node (each
    with its own session; rounds release the GIL); returns the results in node order and
    re-raises the first failure."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(cluster.names)) as ex:
        futs = [ex.submit(target, str(cluster.config), n, *args) for n in cluster.names]
        return [f.result(timeout=timeout) for f in futs]


def spawn_nodes(cluster, target, *args, extra=(), timeout=300):
    """Runs ``target(rank, config, node, *args)`` in one spawned process per node (for
    torch.distributed, one process group per process); ``target`` must live in a module the
    children can import. Returns the results in rank order."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    jobs = [(r, str(cluster.config), n) for r, n in enumerate(cluster.names)] + list(extra)
    with ctx.Pool(len(jobs)) as pool:
        res = [pool.apply_async(target, (*job, *args)) for job in jobs]
        return [r.get(timeout=timeout) for r in res]
