"""ccomp._torchio: the torch tensors in / torch tensors out rules every area module shares."""
import collections
import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ccomp
from ccomp import _torchio
from ccomp._torchio import convert_args, first_tensor, to_numpy, to_torch, torch_io

torch = pytest.importorskip("torch")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass
class Result:
    values: np.ndarray
    codes: np.ndarray
    name: str = "r"


def test_no_torch_is_imported_until_a_tensor_is_passed():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys
        import numpy as np
        import ccomp
        # ccomp.kv_cache (a transformers Cache) and ccomp.ops (the torch custom ops) exist to plug into torch
        names = [m.name for m in pkgutil.walk_packages(ccomp.__path__, "ccomp.")
                 if not any(p.startswith("_") for p in m.name.split(".")[1:])
                 and m.name not in ("ccomp.kv_cache", "ccomp.ops")] + ["ccomp._torchio"]
        for name in names:
            importlib.import_module(name)
        import ccomp.ac as ac
        p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
        assert ac.decode(ac.encode([0, 2], p), p).tolist() == [0, 2]
        assert ac.quantize(p).dtype == np.uint32
        loaded = sorted(m for m in ("torch", "transformers", "timm", "safetensors", "accelerate") if m in sys.modules)
        print(len(names), loaded)
        """)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(ccomp.__file__))))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    count, loaded = r.stdout.split(" ", 1)
    assert int(count) >= 12 and loaded.strip() == "[]", r.stdout


@pytest.mark.parametrize("device", DEVICES)
def test_to_numpy_dtype_and_device_rules(device):
    x = torch.linspace(-3, 3, 12, device=device).reshape(3, 4)
    # CPU tensors become NumPy (float32/float16 kept); CUDA ones stay on their device
    for dt in (torch.float32, torch.float16, torch.float64, torch.int32):
        got = to_numpy(x.to(dt))
        if device == "cpu":
            assert isinstance(got, np.ndarray) and str(got.dtype) == str(dt).split(".")[1]
        else:
            assert isinstance(got, torch.Tensor) and got.device == x.device and got.dtype == dt
    # bfloat16 is widened to float32, exactly; widen=True widens float16 too
    b = (x * 1.37).bfloat16()
    got = to_numpy(b)
    assert got.dtype == (np.float32 if device == "cpu" else torch.float32)
    assert torch.equal(torch.as_tensor(got).cpu(), b.float().cpu())
    h = x.half()
    assert to_numpy(h, widen=True).dtype == (np.float32 if device == "cpu" else torch.float32)
    # a tensor that requires grad is read detached
    g = x.clone().requires_grad_()
    assert not getattr(to_numpy(g), "requires_grad", False)


def test_to_numpy_resolves_negative_and_conjugate_views():
    x = torch.arange(6.0).reshape(2, 3)
    assert np.array_equal(to_numpy(torch._neg_view(x)), -x.numpy())
    z = torch.complex(x, x)
    assert np.array_equal(to_numpy(z.conj()), np.conj(z.numpy()))


@pytest.mark.parametrize("device", DEVICES)
def test_to_torch_follows_the_reference_tensor(device):
    like = torch.zeros(2, dtype=torch.bfloat16, device=device)
    vals = np.linspace(0, 1, 5, dtype=np.float32)
    got = to_torch(vals, like)
    assert got.dtype == torch.bfloat16 and got.device == like.device
    assert torch.equal(got.cpu(), torch.from_numpy(vals).bfloat16())
    assert to_torch(vals, like, cast=False).dtype == torch.float32  # cast=False keeps the result's own
    ints = to_torch(np.arange(4, dtype=np.int64), like)
    assert ints.dtype == torch.int64 and ints.device == like.device  # integers keep their type
    assert to_torch(vals, torch.zeros(1, dtype=torch.int32, device=device)).dtype == torch.float32
    # 0-d arrays, big-endian and read-only arrays, uint16
    zero_d = to_torch(np.array(2.5, dtype=np.float32), like)
    assert isinstance(zero_d, torch.Tensor) and zero_d.shape == () and float(zero_d) == 2.5
    big = np.arange(3, dtype=">f4")
    assert torch.equal(to_torch(big, like, cast=False).cpu(), torch.arange(3, dtype=torch.float32))
    ro = np.arange(3, dtype=np.int32)
    ro.flags.writeable = False
    assert to_torch(ro, like).tolist() == [0, 1, 2]
    assert to_torch(np.array([1, 65535], dtype=np.uint16), like).tolist() == [1, 65535]
    # other values pass through
    assert to_torch("name", like) == "name" and to_torch(3, like) == 3 and to_torch(b"x", like) == b"x"


def test_to_torch_converts_nested_results():
    like = torch.zeros(1, dtype=torch.float16)
    a, b = np.ones(2, np.float32), np.arange(3, dtype=np.uint8)
    out = to_torch({"t": (a, [b, "s"]), "p": Pair(a, b), "r": Result(a, b)}, like)
    t, (bb, s) = out["t"][0], out["t"][1]
    assert t.dtype == torch.float16 and bb.dtype == torch.uint8 and s == "s"
    assert isinstance(out["p"], Pair) and out["p"].a.dtype == torch.float16 and out["p"].b.dtype == torch.uint8
    assert isinstance(out["r"], Result) and out["r"].values.dtype == torch.float16 and out["r"].name == "r"
    # tensors already in a result get the same dtype rule
    assert to_torch((torch.ones(2),), like)[0].dtype == torch.float16


def test_first_tensor_and_convert_args():
    t = torch.ones(2)
    assert first_tensor(1, "a", [np.ones(1), t]) is t
    assert first_tensor(1, np.ones(2), [[t]]) is None  # one level into lists and tuples only
    args, kw = convert_args((t, [t.bfloat16(), 3], Pair(t, 1)), {"x": t.half(), "y": 5})
    assert isinstance(args[0], np.ndarray) and args[1][0].dtype == np.float32 and args[1][1] == 3
    assert isinstance(args[2], Pair) and isinstance(args[2].a, np.ndarray)
    assert kw["x"].dtype == np.float16 and kw["y"] == 5
    _args, kw = convert_args((), {"x": t.half()}, widen=True)
    assert kw["x"].dtype == np.float32


def test_torch_io_decorator():
    seen = []

    @torch_io(like="scale")
    def scaled(x, scale):
        seen.append((type(x), type(scale)))
        return np.asarray(x, np.float32) * np.asarray(scale, np.float32), "label"

    # NumPy in, NumPy out
    out, label = scaled(np.ones(2), np.float32(2))
    assert isinstance(out, np.ndarray) and label == "label"
    # tensors in: the function sees NumPy; the results follow `like` (device, float dtype)
    s = torch.full((2,), 3.0, dtype=torch.bfloat16)
    out, label = scaled(torch.ones(2), s)
    assert seen[-1] == (np.ndarray, np.ndarray)
    assert out.dtype == torch.bfloat16 and out.tolist() == [3.0, 3.0] and label == "label"
    # `like` not a tensor: the first tensor argument is the reference
    out, _ = scaled(torch.ones(2, dtype=torch.float16), 2.0)
    assert out.dtype == torch.float16

    @torch_io(widen=True, post=lambda r: r.astype(np.int32))
    def total(x):
        seen.append(x.dtype)
        return np.asarray([x.sum()])

    assert total(np.arange(3.0)).dtype == np.float64  # post only applies when tensors came in
    got = total(torch.ones(3, dtype=torch.float16))
    assert seen[-1] == np.float32 and got.dtype == torch.int32 and got.tolist() == [3]
    assert total.__wrapped_torch_io__ and total.__name__ == "total"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch without CUDA")
def test_cuda_results_come_back_on_the_device():
    @torch_io
    def host_only(x):
        return np.arange(3, dtype=np.float32)

    got = host_only(torch.zeros(1, device="cuda", dtype=torch.bfloat16))
    assert got.device.type == "cuda" and got.dtype == torch.bfloat16


def test_torch_module_never_imports_torch():
    assert _torchio.torch_module() is sys.modules["torch"]
    assert _torchio.is_tensor(torch.zeros(1)) and not _torchio.is_tensor(np.zeros(1))


# ------------------------------------------- the other areas' array functions

@pytest.mark.parametrize("device", DEVICES)
def test_pages_array_functions_take_tensors(device):
    from ccomp import pages

    rng = np.random.default_rng(3)
    page = rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)
    tiles, grid = pages.sub_images(page, size=32)
    t_tiles, t_grid = pages.sub_images(torch.from_numpy(page).to(device), size=32)
    assert t_tiles.dtype == torch.uint8 and t_grid.dtype == torch.int64 and t_tiles.device.type == device
    assert np.array_equal(t_tiles.cpu().numpy(), tiles) and np.array_equal(t_grid.cpu().numpy(), grid)
    tokens = pages.patch_tokens(tiles, patch=8)
    t_tokens = pages.patch_tokens(t_tiles, patch=8)
    assert t_tokens.dtype == torch.float32 and np.array_equal(t_tokens.cpu().numpy(), tokens)
    # float tokens keep their dtype (bfloat16 widened for the computation, exactly, then narrowed)
    b = torch.from_numpy(tokens).to(device).bfloat16().requires_grad_()
    got = pages.saliency(b)
    assert got.dtype == torch.bfloat16 and got.device.type == device
    assert torch.equal(got.cpu(), torch.from_numpy(pages.saliency(b.detach().float().cpu().numpy())).bfloat16())
    with pytest.raises(ValueError, match="shape"):
        pages.saliency(torch.zeros(3, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_zipfit_top_k_indices_takes_tensors(device):
    from ccomp import zipfit

    scores = np.array([0.25, 0.75, 0.5, 0.75, 0.125], dtype=np.float32)
    for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        got = zipfit.top_k_indices(torch.from_numpy(scores).to(device, dt), 3)
        assert got.dtype == torch.int64 and got.device.type == device and got.tolist() == [1, 3, 2]
    with pytest.raises(ValueError, match="finite"):
        zipfit.top_k_indices(torch.tensor([1.0, float("nan")], device=device), 1)
