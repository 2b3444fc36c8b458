"""NetStorm for Python trainers: all-reduce numpy arrays and torch CPU tensors in place
through the node's ``netstorm-dp``.

>>> import numpy as np, netstorm
>>> s = netstorm.Session("cluster.toml", "a")          # waits for the node's dp
>>> grads = np.zeros(s.buffer_elems, dtype=np.float32)
>>> stats = s.allreduce(grads)                          # sum over every node, in place
>>> stats.round, stats.time, stats.epoch, stats.contributors

``allreduce_many`` packs any number of buffers of any size into rounds of
``buffer_elems``; ``broadcast`` makes every node's buffers equal to one node's (state
sync). ``import netstorm.torch`` registers the ``"netstorm"`` torch.distributed backend.
"""

from . import errors
from ._netstorm import RoundStats
from ._netstorm import Session as _NativeSession
from .errors import (
    BufferError,
    ConfigError,
    DataPlaneNotFoundError,
    MembersJoinedError,
    NetstormError,
    PeerLostError,
    TimeoutError,
)

__all__ = [
    "Session",
    "RoundStats",
    "as_buffer",
    "errors",
    "NetstormError",
    "TimeoutError",
    "PeerLostError",
    "MembersJoinedError",
    "ConfigError",
    "BufferError",
    "DataPlaneNotFoundError",
]


def _describe(x):
    return type(x).__module__ + "." + type(x).__name__


def as_buffer(x, what="buffer"):
    """``x`` as an object exporting its memory, checked: a float32, C-contiguous, writable
    numpy array or torch CPU tensor (a zero-copy view). Anything else exporting the buffer
    protocol is passed through and checked by the native module."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu":
                raise BufferError(
                    f"{what} is a torch tensor on {x.device}: NetStorm reduces host memory; "
                    "move it with tensor.cpu() (and copy the result back), or reduce on the "
                    "GPU inside the site and pass the CPU copy of one process per site "
                    "(netstorm.torch.hierarchical_hook)"
                )
            if x.dtype != torch.float32:
                raise BufferError(
                    f"{what} is a torch.{str(x.dtype).replace('torch.', '')} tensor: "
                    "NetStorm all-reduces float32; convert with tensor.float()"
                )
            if not x.is_contiguous():
                raise BufferError(
                    f"{what} is a non-contiguous torch tensor (strides {tuple(x.stride())}): "
                    "pass tensor.contiguous() and copy the result back"
                )
            if x.is_sparse or x.is_quantized:
                raise BufferError(f"{what} is a sparse or quantized tensor: pass a dense one")
            # A view of the same memory (no copy); detach() because numpy() refuses tensors
            # that require grad.
            return x.detach().numpy()
    if mod == "numpy":
        import numpy as np

        if isinstance(x, np.ndarray):
            if x.dtype != np.float32:
                raise BufferError(
                    f"{what} is a numpy {x.dtype} array: NetStorm all-reduces float32; "
                    "convert with x.astype(numpy.float32)"
                )
            if not x.flags.c_contiguous:
                raise BufferError(
                    f"{what} is a non-contiguous numpy array (strides {x.strides}): pass "
                    "numpy.ascontiguousarray(x) and copy the result back"
                )
            if not x.flags.writeable:
                raise BufferError(f"{what} is a read-only numpy array: allreduce works in place")
    return x


class Session:
    """A trainer's connection to the ``netstorm-dp`` of ``node`` in cluster config
    ``config``.

    Waits up to ``connect_timeout`` seconds for the dp, then raises
    :class:`DataPlaneNotFoundError` ("no netstorm-dp serves node X"); a bad config raises
    :class:`ConfigError` (``file``, ``line``, ``key``). Rounds wait up to ``timeout``
    seconds (default: the config's ``trainer_timeout_s``), then raise :class:`TimeoutError`;
    the timed-out round may still be running, so the session refuses further calls: open a
    new one (it waits for that round to end before starting the next).
    Every call releases the GIL while its rounds run; buffers are reduced in place with no
    copy besides the one into the dp's shared memory and the one out of it.
    """

    def __init__(self, config, node, connect_timeout=30.0, timeout=None):
        self._native = _NativeSession(str(config), node, connect_timeout, timeout)

    def allreduce(self, buf, op="sum"):
        """Sums (``op="sum"``) or averages (``"avg"``: the sum divided by the round's
        contributors) ``buf`` over every node, in place. ``buf`` holds exactly
        ``buffer_elems`` float32 (else :class:`BufferError` names the config change).
        Returns the :class:`RoundStats`."""
        return self._native.allreduce(as_buffer(buf), op)

    def allreduce_many(self, bufs, op="sum"):
        """Like :meth:`allreduce` for a list of buffers of any sizes, packed back to back
        into as few rounds as fit. Every node must pass the same sizes in the same order."""
        return self._native.allreduce_many(
            [as_buffer(b, f"buffer {i}") for i, b in enumerate(bufs)], op
        )

    def broadcast(self, bufs, root):
        """Makes ``bufs`` (one buffer or a list) on every node equal, bit for bit, to those
        of node ``root`` (a node name or id): state sync at start or after a restart."""
        if not isinstance(bufs, (list, tuple)):
            bufs = [bufs]
        return self._native.broadcast(
            [as_buffer(b, f"buffer {i}") for i, b in enumerate(bufs)], root
        )

    def sync_state(self, state, root):
        """Returns node ``root``'s ``state`` (bytes-like, the same length on every member)
        on every member, byte for byte: call it on every member with the same ``root``
        (an id) after :class:`MembersJoinedError`, before contributing again."""
        return self._native.sync_state(bytes(state), int(root))

    buffer_elems = property(lambda self: self._native.buffer_elems, doc="floats per round")
    node = property(lambda self: self._native.node)
    node_id = property(lambda self: self._native.node_id)
    nodes = property(lambda self: self._native.nodes, doc="node names in id order")
    config = property(lambda self: self._native.config)
    host = property(lambda self: self._native.host, doc="this node's IP in the config")
    next_round = property(lambda self: self._native.next_round)
    dp_pid = property(lambda self: self._native.dp_pid)
    last_stats = property(lambda self: self._native.last_stats)

    @property
    def world_size(self):
        return len(self._native.nodes)

    @property
    def timeout(self):
        return self._native.timeout

    @timeout.setter
    def timeout(self, seconds):
        self._native.timeout = seconds

    def __repr__(self):
        return repr(self._native)
