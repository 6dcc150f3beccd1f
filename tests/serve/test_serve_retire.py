"""Retiring a reloaded or unloaded model version, in-process: a request that looked the old version up before
the switch but queues after it is answered by the successor (503 for an unloaded model), never lost."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dslc.serve.app import ServeApp
from dslc.serve.metrics import Metrics
from dslc.serve.model import ServedModel
from dslc.serve.protocol import ProtocolError
from dslc.serve.repository import ModelControl
from serve_helpers import lenet_input, serve_models

pytestmark = pytest.mark.timeout(60)


def _model(seed: int) -> ServedModel:
    return ServedModel("lenet", "1", serve_models.lenet(seed).SerializeToString(), max_batch_size=8, device="cpu",
                       threads=1)


def test_late_request_to_a_replaced_version_goes_to_its_successor(tmp_path):
    old = _model(0)
    app = ServeApp([old], metrics=Metrics())
    new = _model(1)
    control = ModelControl(app, str(tmp_path), mode="explicit", make_models=lambda entry: [new])
    app.control = control
    x = lenet_input(3)

    async def main():
        await app._load_all()
        held = app.models["lenet"]["1"]            # what a request holds between lookup and submit
        assert held is old
        before = await held.batcher.submit({"x": x}, 1)   # served by the old version
        await asyncio.get_running_loop().run_in_executor(None, new.load)
        control._install("lenet", [new], prints=None)
        assert app.models["lenet"]["1"] is new     # new lookups: the new version at once
        in_flight = held.batcher.submit({"x": x}, 1)      # queued on the old batcher after the switch
        await asyncio.wait_for(asyncio.gather(*control._tasks), 30)   # the old version retires
        assert held.state == "retired" and held.batcher is new.batcher
        late = await held.batcher.submit({"x": x}, 1)     # after retirement: handed to the successor
        return before, await in_flight, late

    before, in_flight, late = asyncio.run(main())
    np.testing.assert_allclose(in_flight["logits"], before["logits"])       # finished by the old version
    assert not np.allclose(late["logits"], before["logits"])                 # the new model's answer
    np.testing.assert_allclose(late["logits"], new.run({"x": x})[0], rtol=1e-6)
    new.batcher.close()


def test_late_request_to_an_unloaded_model_is_503(tmp_path):
    (tmp_path / "lenet").mkdir()
    m = _model(0)
    app = ServeApp([m], metrics=Metrics())
    control = ModelControl(app, str(tmp_path), mode="explicit")
    app.control = control

    async def main():
        await app._load_all()
        await control.unload("lenet")
        assert "lenet" not in app.models
        await asyncio.wait_for(asyncio.gather(*control._tasks), 30)
        with pytest.raises(ProtocolError) as e:
            await m.batcher.submit({"x": lenet_input(1)}, 1)
        assert e.value.status == 503 and "unloaded" in e.value.message
        assert control.index() == [{"name": "lenet", "state": "UNAVAILABLE", "reason": "unloaded"}]

    asyncio.run(main())
