import subprocess
import sys

import pytest
import torch

from bilaf.devices import DeviceError, device_name, device_used, resolve_device, set_threads
from bilaf.errors import InputError
from bilaf.selection import SelectionError


def test_a_device_is_resolved_as_asked_else_cuda_when_there_is_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device_name("cuda:1") == "cuda:1" and device_name() == str(resolve_device())


@pytest.mark.parametrize("error", [DeviceError, SelectionError])
def test_a_bad_device_is_one_error_of_the_callers_kind(error):
    with pytest.raises(error, match="device 'warp-drive' is not a torch device"):
        resolve_device("warp-drive", error)
    assert issubclass(DeviceError, InputError)


def test_the_manifest_device_is_the_requested_one_else_where_torch_ran():
    assert device_used("cuda:1") == "cuda:1"
    assert device_used(None) == device_name()


def test_a_numpy_only_command_records_cpu_without_importing_torch():
    code = "import sys; from bilaf.devices import device_used; print(device_used(None), "
    code += "'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]


def test_threads_are_set_only_when_given():
    before = torch.get_num_threads()
    set_threads(None)
    assert torch.get_num_threads() == before
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
