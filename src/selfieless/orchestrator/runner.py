"""The one start / signals / stop runner for a running system (`up`, `python -m selfieless.orchestrator`,
benchmarks): SIGINT/SIGTERM (or :meth:`Runner.request_stop`) ask for a stop; :meth:`stop` stops
the system, then runs what was registered with :meth:`after_stop` (newest first).

    runner = Runner()
    system = await runner.start(stack, state_dir, gateway_process=True)
    await runner.wait()
    await runner.stop()
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from .assemble import System, start_system
from .stack import Stack

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Runner:
    def __init__(self, *, detach: bool = False, on_signal: Callable[[int], object] | None = None,
                 signals: bool = True) -> None:
        self.detach = detach            # on stop, leave replicas (and a gateway process) running
        # False for a caller that stops the system itself (a benchmark): Ctrl-C then interrupts it
        # as usual instead of asking for a stop nobody waits for.
        self.signals_handled = signals
        self.on_signal = on_signal      # called with the number of signals received so far
        self.stop_requested = asyncio.Event()
        self.requested_at: float | None = None   # monotonic time of the first stop request
        self.signals = 0
        self.system: System | None = None
        self._after: list[Callable[[], Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def install_signals(self) -> None:
        if self._loop is None and self.signals_handled:
            self._loop = asyncio.get_running_loop()
            for sig in SIGNALS:
                self._loop.add_signal_handler(sig, self._signalled)

    def remove_signals(self) -> None:
        if self._loop is not None:
            for sig in SIGNALS:
                self._loop.remove_signal_handler(sig)
            self._loop = None

    def _signalled(self) -> None:
        self.signals += 1
        if self.on_signal is not None:
            self.on_signal(self.signals)
        self.request_stop()

    def request_stop(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self.stop_requested.set()

    def after_stop(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` (awaited if it returns an awaitable) once the system has stopped."""
        self._after.append(fn)

    async def start(self, stack: Stack, state_dir: str | os.PathLike | None = None, **kw: Any) -> System:
        self.install_signals()
        self.system = await start_system(stack, state_dir, **kw)
        return self.system

    async def wait(self) -> None:
        await self.stop_requested.wait()

    async def stop(self) -> None:
        try:
            if self.system is not None:
                system, self.system = self.system, None
                await system.stop(detach=self.detach)
        finally:
            try:
                while self._after:
                    result = self._after.pop()()
                    if inspect.isawaitable(result):
                        await result
            finally:
                self.remove_signals()

    async def run(self, stack: Stack, state_dir: str | os.PathLike | None = None, *,
                  on_started: Callable[[System], Any] | None = None, **kw: Any) -> None:
        """Start, call ``on_started(system)``, wait for a stop request, stop."""
        try:
            system = await self.start(stack, state_dir, **kw)
            if on_started is not None:
                result = on_started(system)
                if inspect.isawaitable(result):
                    await result
            await self.wait()
        finally:
            await self.stop()
