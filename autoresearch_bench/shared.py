"""Memory two processes share through a file descriptor: inputs and logits between scorer and model.

On the CPU a memfd, mapped by both. On CUDA, device memory made with the driver's virtual memory API
(cuMemCreate) and exported as a POSIX file descriptor: the fd crosses the sandbox (other PID and
mount namespaces, another uid) where CUDA's legacy IPC handles do not (measured on the H200), and the
logits never leave the GPU. Both sides see the memory as a torch tensor (through
__cuda_array_interface__ on CUDA).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os

import torch

from .protocol import SharedSpec

_HANDLE_FD = 1  # CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
_DEVICE = 1  # CU_MEM_LOCATION_TYPE_DEVICE
_PINNED = 1  # CU_MEM_ALLOCATION_TYPE_PINNED
_READ_WRITE = 3  # CU_MEM_ACCESS_FLAGS_PROT_READWRITE


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compression", ctypes.c_ubyte),
        ("rdma", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("handle_types", ctypes.c_int),
        ("location", _Location),
        ("win32", ctypes.c_void_p),
        ("flags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


@functools.cache
def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _check(result: int, what: str) -> None:
    if result != 0:
        text = ctypes.c_char_p()
        _driver().cuGetErrorString(result, ctypes.byref(text))
        raise RuntimeError(f"CUDA {what} failed: {text.value.decode() if text.value else result}")


def _prop(device: int) -> _AllocationProp:
    prop = _AllocationProp()
    prop.type, prop.handle_types, prop.location = _PINNED, _HANDLE_FD, _Location(_DEVICE, device)
    return prop


def _map(handle: ctypes.c_uint64, nbytes: int, device: int) -> int:
    cu, ptr = _driver(), ctypes.c_uint64()
    _check(
        cu.cuMemAddressReserve(
            ctypes.byref(ptr), ctypes.c_size_t(nbytes), ctypes.c_size_t(0), ctypes.c_uint64(0), ctypes.c_uint64(0)
        ),
        "address reserve",
    )
    _check(cu.cuMemMap(ptr, ctypes.c_size_t(nbytes), ctypes.c_size_t(0), handle, ctypes.c_uint64(0)), "map")
    access = _AccessDesc(_Location(_DEVICE, device), _READ_WRITE)
    _check(cu.cuMemSetAccess(ptr, ctypes.c_size_t(nbytes), ctypes.byref(access), ctypes.c_size_t(1)), "set access")
    return ptr.value


def _round_up(nbytes: int, device: int) -> int:
    granularity = ctypes.c_size_t()
    _check(
        _driver().cuMemGetAllocationGranularity(ctypes.byref(granularity), ctypes.byref(_prop(device)), 0),
        "granularity",
    )
    g = granularity.value
    return -(-nbytes // g) * g


class _DeviceArray:
    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (ptr, False), "version": 3}


class SharedBuffer:
    """A byte buffer shared through `spec.fd`; `view(dtype, shape)` is a tensor over its start."""

    def __init__(self, spec: SharedSpec, base: torch.Tensor, keep: object = None):
        self.spec, self._base, self._keep = spec, base, keep

    @classmethod
    def create(cls, nbytes: int, device: str) -> SharedBuffer:
        if device == "cpu":
            fd = os.memfd_create("ar-shared")
            os.ftruncate(fd, nbytes)
            return cls.open(SharedSpec(fd, nbytes, device))
        torch.zeros(1, device=device)  # the primary context is current from here on
        index = torch.cuda.current_device()
        size = _round_up(nbytes, index)
        handle, fd = ctypes.c_uint64(), ctypes.c_int()
        _check(
            _driver().cuMemCreate(
                ctypes.byref(handle), ctypes.c_size_t(size), ctypes.byref(_prop(index)), ctypes.c_uint64(0)
            ),
            "allocation",
        )
        _check(
            _driver().cuMemExportToShareableHandle(ctypes.byref(fd), handle, _HANDLE_FD, ctypes.c_uint64(0)), "export"
        )
        ptr = _map(handle, size, index)
        spec = SharedSpec(fd.value, size, device)
        return cls(spec, torch.as_tensor(_DeviceArray(ptr, size), device=device))

    @classmethod
    def open(cls, spec: SharedSpec) -> SharedBuffer:
        if spec.device == "cpu":
            mapped = mmap.mmap(spec.fd, spec.nbytes)
            return cls(spec, torch.frombuffer(mapped, dtype=torch.uint8), keep=mapped)
        torch.zeros(1, device=spec.device)
        index = torch.cuda.current_device()
        handle = ctypes.c_uint64()
        _check(
            _driver().cuMemImportFromShareableHandle(ctypes.byref(handle), ctypes.c_void_p(spec.fd), _HANDLE_FD),
            "import",
        )
        ptr = _map(handle, spec.nbytes, index)
        return cls(spec, torch.as_tensor(_DeviceArray(ptr, spec.nbytes), device=spec.device))

    def view(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        n = dtype.itemsize
        for dim in shape:
            n *= dim
        if n > self.spec.nbytes:
            raise ValueError(f"a {dtype} view of shape {shape} needs {n} bytes; the buffer has {self.spec.nbytes}")
        return self._base[:n].view(dtype).view(shape)
