"""Supervised background greenlets: one implementation for every long-lived loop."""
from __future__ import annotations

import logging
from typing import Callable

import gevent


def supervise(loop: Callable[[], None], name: str, logger: logging.Logger, *,
              stopped: Callable[[], bool] = lambda: False, backoff: float = 0.5) -> None:
    """Run ``loop`` until it returns or ``stopped()`` is true, restarting it after any ``Exception``.

    The exception is logged with its traceback and the loop restarts ``backoff`` seconds later;
    ``GreenletExit`` (a kill at shutdown) is never caught. Meant as a greenlet's target:
    ``gevent.spawn(supervise, self._sweep_loop, "liveness sweep", logger)``.
    """
    crashed = False
    while not stopped():
        try:
            if crashed:  # inside the try: an exception raised during the pause is survived too
                crashed = False
                gevent.sleep(backoff)
            loop()
            return
        except gevent.GreenletExit:
            raise
        except Exception:
            crashed = True
            logger.exception("%s crashed; restarting it in %.1fs", name, backoff)
