"""The reconcile mode is chosen once, by the kind of driver: a PortDriver gets the per-port
reconciler and an executor that starts and stops single replicas through it; an EngineDriver gets
the engine reconciler and an executor that never touches the driver; anything else is refused."""

from __future__ import annotations

import pytest

from selfieless.gateway import Gateway, GatewayConfig
from selfieless.orchestrator.controller import Orchestrator
from selfieless.orchestrator.drivers.base import Driver, DriverError
from selfieless.orchestrator.drivers.process import ProcessDriver
from selfieless.orchestrator.drivers.swarm import SwarmDriver
from selfieless.orchestrator.reconcile_engine import EngineReconciler
from selfieless.orchestrator.reconcile_ports import PortReconciler

from orch_helpers import echo_stack

pytestmark = pytest.mark.anyio


def _orchestrator(driver):
    return Orchestrator(echo_stack(range(9500, 9502)), driver, Gateway(GatewayConfig(host="127.0.0.1", port=0)))


def test_a_port_driver_gets_the_port_reconciler(tmp_path):
    driver = ProcessDriver("t", tmp_path)
    orch = _orchestrator(driver)
    assert isinstance(orch.reconciler, PortReconciler) and orch.reconciler.driver is driver
    assert orch.executor.driver is driver and orch.reconciler.executor is orch.executor


async def test_an_engine_driver_gets_the_engine_reconciler_and_an_executor_without_a_driver():
    driver = SwarmDriver("t", client=object())   # the client is never called here
    orch = _orchestrator(driver)
    assert isinstance(orch.reconciler, EngineReconciler) and orch.reconciler.driver is driver
    assert orch.executor.driver is None and orch.reconciler.executor is orch.executor
    svc = orch.services["echo"]
    with pytest.raises(DriverError, match="the engine starts this service's replicas itself"):
        await orch.executor.start_now(svc, 9500, svc.spec, "test")


def test_a_driver_of_neither_kind_is_refused():
    class Neither(Driver):
        name = "neither"

    with pytest.raises(TypeError, match="Neither is neither a PortDriver nor an EngineDriver"):
        _orchestrator(Neither())
