"""NetStorm for torch.distributed and DDP.

``import netstorm.torch`` registers the backend ``"netstorm"``::

    # NETSTORM_CONFIG=cluster.toml NETSTORM_NODE=a MASTER_ADDR=... MASTER_PORT=... RANK=0 WORLD_SIZE=3
    import torch.distributed as dist, netstorm.torch
    dist.init_process_group("netstorm")            # one process per node (site)
    model = DDP(model)
    model.register_comm_hook(None, netstorm.torch.allreduce_hook)   # one round per step

Float32 CPU all-reduces with SUM or AVG (AVG divides by the round's contributors) go through
NetStorm; everything else (DDP's parameter broadcast and metadata allgather, integer or
small metric reductions, barrier, point-to-point) goes to a gloo group on the same store.
A call's tensors travel together, packed into as few rounds of ``buffer_elems`` as fit; the
hook packs all DDP buckets of a step into one call.

For sites with several processes (or GPUs), :func:`hierarchical_hook` reduces inside the site
with the site's own process group, across sites through NetStorm from one process per site,
and broadcasts back inside the site; launch one ``torchrun`` per site.
"""

import os

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import _create_work_from_future

from . import Session, as_buffer
from .errors import BufferError, ConfigError

BACKEND = "netstorm"

__all__ = [
    "BACKEND",
    "ProcessGroupNetStorm",
    "configure",
    "allreduce_hook",
    "HierarchicalState",
    "hierarchical_hook",
    "broadcast_module",
]

_options = {}


def configure(config=None, node=None, connect_timeout=None, timeout=None):
    """Sets what the next ``init_process_group("netstorm")`` connects to, instead of the
    environment (``NETSTORM_CONFIG``, ``NETSTORM_NODE``, ``NETSTORM_CONNECT_TIMEOUT``,
    ``NETSTORM_TIMEOUT``)."""
    _options.update(
        {
            k: v
            for k, v in dict(
                config=config, node=node, connect_timeout=connect_timeout, timeout=timeout
            ).items()
            if v is not None
        }
    )


def _setting(key, env, default=None):
    if key in _options:
        return _options[key]
    return os.environ.get(env, default)


def _completed_work(result):
    fut = torch.futures.Future()
    fut.set_result(result)
    return _create_work_from_future(fut)


def _average(op):
    if op == dist.ReduceOp.SUM:
        return False
    if op == dist.ReduceOp.AVG:
        return True
    return None


class ProcessGroupNetStorm(dist.ProcessGroup):
    """The ``"netstorm"`` process group: one rank per NetStorm node."""

    def __init__(self, store, rank, size, timeout, config=None, node=None, session=None):
        super().__init__(rank, size)
        config = config or _setting("config", "NETSTORM_CONFIG")
        node = node or _setting("node", "NETSTORM_NODE")
        if session is None and (not config or not node):
            raise ConfigError(
                "the netstorm backend needs the cluster config and this process's node: set "
                "NETSTORM_CONFIG and NETSTORM_NODE (or call netstorm.torch.configure(config=..., "
                "node=...)) before init_process_group",
                key="NETSTORM_CONFIG" if not config else "NETSTORM_NODE",
            )
        if session is None:
            t = _setting("timeout", "NETSTORM_TIMEOUT")
            session = Session(
                config,
                node,
                connect_timeout=float(_setting("connect_timeout", "NETSTORM_CONNECT_TIMEOUT", 30)),
                timeout=None if t is None else float(t),
            )
        self.session = session
        # The side group: gloo on the same store (its keys under their own prefix), bound to
        # this node's address in the cluster config, which the other nodes reach.
        opts = dist.ProcessGroupGloo._Options()
        opts._timeout = timeout
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=session.host)]
        self.gloo = dist.ProcessGroupGloo(
            dist.PrefixStore("netstorm-gloo/", store), rank, size, opts
        )
        if session.world_size != size:
            raise ConfigError(
                f"init_process_group(world_size={size}), but {session.config} has "
                f"{session.world_size} nodes ({', '.join(session.nodes)}): run one process per "
                "node, or several per site with netstorm.torch.hierarchical_hook",
                file=session.config,
                key="node",
            )

    def getBackendName(self):
        return BACKEND

    def _netstorm_op(self, tensors, op):
        """Whether ``tensors`` go through NetStorm (float32 SUM/AVG): True/False for the
        average flag, None for gloo. GPU, non-contiguous and wrong-dtype float tensors are
        refused by ``as_buffer`` with a message."""
        average = _average(op)
        if average is None:
            return None
        if all(t.dtype == torch.float32 for t in tensors):
            for i, t in enumerate(tensors):
                as_buffer(t, f"tensor {i}")  # refuses GPU / non-contiguous with a message
            return average
        if average:
            raise BufferError(
                "ReduceOp.AVG goes through NetStorm, which reduces float32: convert the "
                "tensors with .float(), or use SUM and divide"
            )
        return None  # integer SUM, e.g. DDP's unused-parameter map: gloo

    def allreduce(self, tensors, opts=None):
        if isinstance(tensors, torch.Tensor):
            tensors = [tensors]
        op = opts.reduceOp if opts is not None else dist.ReduceOp.SUM
        average = self._netstorm_op(tensors, op)
        if average is None:
            return self.gloo.allreduce(tensors, opts) if opts is not None else self.gloo.allreduce(tensors)
        self.session.allreduce_many(tensors, "avg" if average else "sum")
        return _completed_work(tensors)

    def allreduce_coalesced(self, tensors, opts=None):
        op = opts.reduceOp if opts is not None else dist.ReduceOp.SUM
        average = self._netstorm_op(tensors, op)
        if average is None:
            return self.gloo.allreduce_coalesced(tensors, opts)
        self.session.allreduce_many(tensors, "avg" if average else "sum")
        return _completed_work(tensors)


def _delegate(name):
    def method(self, *args, **kwargs):
        return getattr(self.gloo, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"{name} through the gloo group on the same store."
    return method


for _name in [
    "broadcast",
    "allgather",
    "_allgather_base",
    "allgather_coalesced",
    "allgather_into_tensor_coalesced",
    "gather",
    "scatter",
    "reduce",
    "reduce_scatter",
    "_reduce_scatter_base",
    "reduce_scatter_tensor_coalesced",
    "alltoall",
    "alltoall_base",
    "send",
    "recv",
    "recv_anysource",
    "barrier",
]:
    setattr(ProcessGroupNetStorm, _name, _delegate(_name))


def _create(store, rank, size, timeout):
    return ProcessGroupNetStorm(store, rank, size, timeout)


dist.Backend.register_backend(BACKEND, _create, devices=["cpu"])


def _session_of(state):
    if isinstance(state, Session):
        return state
    pg = state if state is not None else dist.distributed_c10d._get_default_group()
    if not isinstance(pg, ProcessGroupNetStorm):
        raise ConfigError(
            "allreduce_hook needs the netstorm process group (init_process_group(\"netstorm\")) "
            "or a netstorm.Session as its state"
        )
    return pg.session


class _StepPacker:
    """Holds a step's DDP buckets until the last one, then reduces them in one call."""

    def __init__(self):
        self.pending = []

    def add(self, bucket):
        fut = torch.futures.Future()
        self.pending.append((bucket.buffer(), fut))
        return fut

    def take(self):
        pending, self.pending = self.pending, []
        return pending


_packers = {}


def allreduce_hook(state, bucket):
    """DDP communication hook: every bucket of a step in one NetStorm call (one round when
    the model fits ``buffer_elems``), averaged over the contributors.

    ``state``: None (the default ``"netstorm"`` group), that group, or a
    :class:`netstorm.Session`. Register with ``ddp.register_comm_hook(None, allreduce_hook)``.
    """
    session = _session_of(state)
    packer = _packers.setdefault(id(session), _StepPacker())
    fut = packer.add(bucket)
    if bucket.is_last():
        pending = packer.take()
        bufs = [b for b, _ in pending]
        try:
            session.allreduce_many(bufs, "avg")
        except Exception as e:  # every waiting bucket learns why
            for _, f in pending:
                f.set_exception(e)
            return fut
        for b, f in pending:
            f.set_result(b)
    return fut


class HierarchicalState:
    """State of :func:`hierarchical_hook` in one process of a site.

    ``site_group``: the site's process group (NCCL or gloo; the default group when each
    site runs its own ``torchrun``). ``session``: the :class:`netstorm.Session` of the site's
    node in the site's leader process (the group's rank 0), None in the others.
    """

    def __init__(self, site_group=None, session=None, leader=0):
        self.site_group = site_group if site_group is not None else dist.group.WORLD
        self.session = session
        # The leader's global rank (collectives on subgroups take global ranks).
        self.leader = dist.get_global_rank(self.site_group, leader)
        self.is_leader = dist.get_rank(self.site_group) == leader
        if self.is_leader and session is None:
            raise ConfigError(
                "the site leader (rank 0 of the site group) needs the site's netstorm.Session"
            )
        self.packer = _StepPacker()


def hierarchical_hook(state, bucket):
    """DDP communication hook for sites with several processes: reduce inside the site (the
    site group), all-reduce across sites through NetStorm from the leader, broadcast back
    inside the site, divide by the processes of every contributing site. All buckets of a
    step travel in one NetStorm call. GPU buckets cross sites through a CPU copy.
    """
    fut = state.packer.add(bucket)
    if not bucket.is_last():
        return fut
    pending = state.packer.take()
    bufs = [b for b, _ in pending]
    try:
        group = state.site_group
        # How many processes this site adds in travels with the gradients, so the divisor is
        # the processes of the sites that contributed.
        procs = torch.tensor([float(dist.get_world_size(group))], device=bufs[0].device)
        works = [dist.reduce(b, dst=state.leader, group=group, async_op=True) for b in bufs]
        for w in works:
            w.wait()
        if state.is_leader:
            host = [b if b.device.type == "cpu" else b.cpu() for b in bufs + [procs]]
            state.session.allreduce_many(host, "sum")
            for b, h in zip(bufs + [procs], host):
                if h is not b:
                    b.copy_(h)
        works = [
            dist.broadcast(b, src=state.leader, group=group, async_op=True) for b in bufs + [procs]
        ]
        for w in works:
            w.wait()
        for b in bufs:
            b.div_(procs)
    except Exception as e:
        for _, f in pending:
            f.set_exception(e)
        return fut
    for b, f in pending:
        f.set_result(b)
    return fut


def broadcast_module(module, session, root):
    """Makes ``module``'s parameters and float32 buffers equal, bit for bit, to those of node
    ``root`` on every node (state sync at start, or for a node that restarts). Call it in the
    one process per node that holds the session, before DDP construction broadcasts inside
    the site."""
    tensors = [p.data for p in module.parameters()] + [
        b for b in module.buffers() if b.dtype == torch.float32
    ]
    with torch.no_grad():
        return session.broadcast(tensors, root)

