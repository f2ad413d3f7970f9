"""The lifecycle runner: a signal asks for a stop, stop runs what was registered newest first, and
a runner told not to handle signals leaves Ctrl-C to its caller."""

import asyncio
import os
import signal

from selfieless.orchestrator.runner import Runner


def test_a_signal_asks_for_a_stop_and_stop_runs_the_after_hooks_newest_first():
    order = []

    async def main():
        seen = []
        runner = Runner(on_signal=seen.append)
        runner.install_signals()
        runner.after_stop(lambda: order.append("first registered"))

        async def later():
            order.append("second registered (async)")

        runner.after_stop(later)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(runner.wait(), 5)
        assert seen == [1] and runner.requested_at is not None
        await runner.stop()
        # The handlers are gone from the loop (remove_signal_handler says whether one was there).
        assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())
    assert order == ["second registered (async)", "first registered"]


def test_without_signals_ctrl_c_stays_the_callers():
    async def main():
        runner = Runner(signals=False)
        runner.install_signals()
        assert not asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
        await runner.stop()

    asyncio.run(main())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
