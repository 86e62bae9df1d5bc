"""The connect session: a Slurm job, the payload on its node, the tunnel, and the way back.

Layers, bottom up (each module imports only those before it):

- :mod:`~fireflyhpc.session.request`: what was asked (:class:`ConnectRequest`) and how
  a session ended (:class:`Ending`); plain values.
- :mod:`~fireflyhpc.session.login`: the login connection, opened in a thread while
  the modules after it load.
- :mod:`~fireflyhpc.session.records`: per-user session records on disk (``status``).
- :mod:`~fireflyhpc.session.jobs`: which job, waiting for it, how it ended (Slurm).
- :mod:`~fireflyhpc.session.launch` and :mod:`~fireflyhpc.session.srun`: the payload
  on the node, over SSH or as an srun job step.
- :mod:`~fireflyhpc.session.lifeline`: the session's hold on the server, which lets
  a lost connection linger before the node ends things.
- :mod:`~fireflyhpc.session.steps`: the job script and the payload spec (pure).
- :mod:`~fireflyhpc.session.watch`: readiness through the tunnel, and the watch loop.
- :mod:`~fireflyhpc.session.payload`: the payload steps of a Session (ssh, srun, auto,
  reuse of a kept server).
- :mod:`~fireflyhpc.session.core`: :class:`Session`, which owns every piece above.
- :mod:`~fireflyhpc.session.api`: :func:`open_session` (CLI) and :func:`connect`
  (Python/Jupyter; reached as ``fireflyhpc.connect``).
- :mod:`~fireflyhpc.session.stopping`: ``fireflyhpc stop``.

(Not called ``fireflyhpc/connect/``: that would shadow the ``fireflyhpc.connect()``
function on the package.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fireflyhpc.lazy import lazy_exports

# Where each public name lives, loaded on first use (PEP 562): `connect` starts logging
# in before the session's heavier modules load (see :mod:`.login`).
_HOMES = {"connect": "api", "open_session": "api", "Session": "core",
          "ConnectRequest": "request", "Ending": "request"}

__all__ = sorted(_HOMES)


__getattr__ = lazy_exports(__name__, _HOMES)

if TYPE_CHECKING:
    from fireflyhpc.session.api import connect, open_session
    from fireflyhpc.session.core import Session
    from fireflyhpc.session.request import ConnectRequest, Ending
