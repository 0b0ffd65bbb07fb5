"""One thread and a fixed seed for every torch test (small, reproducible, no oversubscription)."""

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)
