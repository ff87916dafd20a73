"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # The suite runs as two xdist workers on a 2-core machine; tiny models gain nothing
    # from more threads and oversubscribed cores thrash.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def raise_stage_errors():
    # `ichinpaint.cli.main` turns a stage's exception into one line and exit status 1;
    # tests want the exception itself (pytest.raises, readable failures).
    import os

    before = os.environ.get("ICHINPAINT_DEBUG")
    os.environ["ICHINPAINT_DEBUG"] = "1"
    yield
    if before is None:
        os.environ.pop("ICHINPAINT_DEBUG", None)
    else:
        os.environ["ICHINPAINT_DEBUG"] = before
