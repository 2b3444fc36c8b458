"""The exceptions NetStorm raises; every one is a :class:`NetstormError`.

Each also derives from the built-in exception a caller would catch without knowing
NetStorm (``TimeoutError``, ``ValueError``, ``ConnectionError``).
"""

import builtins


class NetstormError(Exception):
    """Base class of every NetStorm error."""


class TimeoutError(NetstormError, builtins.TimeoutError):  # noqa: A001 (shadows on purpose)
    """A round did not finish within the session's timeout.

    Attributes: ``round`` (the round waited for), ``waited`` (seconds), ``done_workers`` and
    ``workers`` (how many of the local dp's workers had finished it).
    """

    def __init__(self, message, round=None, waited=None, done_workers=None, workers=None):
        super().__init__(message)
        self.round = round
        self.waited = waited
        self.done_workers = done_workers
        self.workers = workers


class PeerLostError(NetstormError, ConnectionError):
    """A peer was lost during a round: the cluster decided the round failed on every
    survivor, the buffer is unchanged, and later rounds run over the survivors (issue 19).
    Attributes: ``round``, ``nodes`` (ids of the lost nodes). Also raised, with ``round``
    None and no nodes, when every other node was lost and nothing is left to synchronize.
    """

    def __init__(self, message, round=None, nodes=None):
        super().__init__(message)
        self.round = round
        self.nodes = nodes


class MembersJoinedError(NetstormError):
    """Lost nodes rejoin from ``round`` on (issue 19): nothing was reduced and the buffer is
    unchanged. Every member (the rejoined ones too) must call :meth:`Session.sync_state`
    with the same root, e.g. the lowest id in ``members`` not in ``nodes``, before
    contributing again. Attributes: ``round``, ``nodes`` (ids that rejoin), ``members``
    (every member from ``round`` on).
    """

    def __init__(self, message, round=None, nodes=None, members=None):
        super().__init__(message)
        self.round = round
        self.nodes = nodes
        self.members = members


class ConfigError(NetstormError, ValueError):
    """The cluster config is unreadable or wrong: ``file``, ``line`` (or None) and ``key``
    (or None) say where."""

    def __init__(self, message, file=None, line=None, key=None):
        super().__init__(message)
        self.file = file
        self.line = line
        self.key = key


class BufferError(NetstormError, ValueError):  # noqa: A001
    """A buffer NetStorm cannot reduce in place: not float32, not contiguous, read-only, on
    a GPU, or of the wrong size; the message says what to do."""


class DataPlaneNotFoundError(NetstormError, ConnectionError):
    """No live ``netstorm-dp`` serves the node (after the connect timeout)."""
