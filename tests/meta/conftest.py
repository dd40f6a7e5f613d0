"""Set-up for the meta-learner tests: one intra-op thread.

The tiny networks here gain nothing from a second thread, and on a shared 2-core
machine two OpenMP threads spin while waiting for each other, which multiplies the
suite's run time under load. The previous setting is restored after each test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
