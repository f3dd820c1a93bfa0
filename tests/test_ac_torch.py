"""ccomp.ac with torch tensors: every public function takes them (any float dtype, bfloat16 included,
integer symbols of any width, CPU or CUDA) and gives tensors back where it gives arrays; bytes stay bytes."""
import numpy as np
import pytest

import ccomp
import ccomp.ac as ac

torch = pytest.importorskip("torch")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
RULES = ["constriction", "nacrith"]


def logits_rows(seed, T=12, V=300):
    """Logits that bfloat16 holds exactly (so the float32 copy is the same values)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy((rng.normal(size=(T, V)) * 3).astype(np.float32)).bfloat16().float()
    return x, torch.from_numpy(rng.integers(0, V, T))


def as_np(t):
    return t.cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rule", RULES)
def test_quantize_gives_an_int32_cdf_tensor_equal_to_numpy(device, rule):
    x, _ = logits_rows(1)
    want = ac.quantize(x.numpy(), rule=rule, logits=True, temperature=0.9)
    got = ac.quantize(x.to(device), rule=rule, logits=True, temperature=0.9)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int32 and got.device.type == device
    assert np.array_equal(as_np(got), want.astype(np.int32))
    assert torch.all(got.diff(dim=1) > 0)  # a usable torch tensor: frequencies by arithmetic
    row = ac.quantize(x[3].to(device), rule=rule, logits=True, temperature=0.9)
    assert row.shape == (x.shape[1] + 1,) and np.array_equal(as_np(row), want[3].astype(np.int32))
    # float64 rows keep their own float type (the constriction rule depends on it)
    want64 = ac.quantize(x.double().numpy(), rule=rule, logits=True)
    assert np.array_equal(as_np(ac.quantize(x.double().to(device), rule=rule, logits=True)), want64)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("logits", [True, False])
def test_half_precision_rows_give_the_cdf_of_the_same_values_in_float32(rule, logits):
    x, _ = logits_rows(2)
    for half in (torch.bfloat16, torch.float16):
        h = x.to(half) if logits else torch.softmax(x, 1).to(half)
        want = ac.quantize(h.float(), rule=rule, logits=logits)
        got = ac.quantize(h, rule=rule, logits=logits)
        assert torch.equal(got, want), half
        assert np.array_equal(as_np(got), ac.quantize(h.float().numpy(), rule=rule, logits=logits).view(np.int32))


@pytest.mark.parametrize("device", DEVICES)
def test_lookup_and_ideal_bits_take_integer_symbol_tensors(device):
    x, sym = logits_rows(3)
    want = ac.lookup(sym.numpy(), x.numpy(), logits=True)
    bits = ac.ideal_bits(sym.numpy(), x.numpy(), logits=True)
    xd = x.to(device)
    for s in (sym, sym.int(), sym.to(torch.int16), sym.to(torch.uint8) if sym.max() < 256 else sym, sym.to(device)):
        if device == "cuda" and s.device.type == "cpu":
            s = s.to(device)
        cum, freq = ac.lookup(s, xd.bfloat16(), logits=True)
        for got, w in ((cum, want[0]), (freq, want[1])):
            assert got.dtype == torch.int32 and got.device == xd.device
            assert np.array_equal(as_np(got), w.astype(np.int32))
        assert ac.ideal_bits(s, xd, logits=True) == bits
        assert ac.ideal_bits((cum, freq)) == bits  # the pair as tensors
    # symbols as a tensor with probabilities as NumPy: tensors come back on the symbols' device (CPU)
    cum, freq = ac.lookup(sym, x.numpy(), logits=True)
    assert isinstance(cum, torch.Tensor) and np.array_equal(cum.numpy(), want[0].astype(np.int32))


@pytest.mark.parametrize("device", DEVICES)
def test_encode_decode_round_trip_with_bfloat16_logits(device):
    x, sym = logits_rows(4, T=40)
    xb = x.bfloat16().to(device)
    data = ac.encode(sym.to(device), xb, logits=True, chunk_size=16)
    assert isinstance(data, bytes)
    assert data == ac.encode(sym.numpy(), x.numpy(), logits=True, chunk_size=16)  # bf16 widened exactly
    out = ac.decode(data, xb)
    assert out.dtype == torch.int64 and out.device == xb.device and torch.equal(out.cpu(), sym)
    # the container as a uint8 tensor decodes the same
    assert torch.equal(ac.decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), xb).cpu(), sym)
    assert ac.info(torch.frombuffer(bytearray(data), dtype=torch.uint8))["tokens"] == 40
    # autoregressive: one row (any float dtype) at a time, then the rest in a batch
    d = ac.Decoder(data)
    first = [d.decode(xb[t]) for t in range(5)]
    assert first == sym[:5].tolist() and all(type(s) is int for s in first)
    rest = d.decode_batch(xb[5:].half())
    assert rest.dtype == torch.int64 and rest.device == xb.device and torch.equal(rest.cpu(), sym[5:])
    assert d.remaining == 0


def test_other_rows_than_the_encoders_are_refused():
    x, sym = logits_rows(5, T=20)
    data = ac.encode(sym, x, logits=True)
    with pytest.raises(ccomp.CorruptStreamError):
        ac.decode(data, x.flip(1))
    with pytest.raises(ValueError, match="float type"):
        ac.decode(data, x.double())  # float64 rows give other CDFs under the constriction rule


def test_tensors_that_require_grad_are_read_detached():
    x, sym = logits_rows(6)
    xg = x.clone().requires_grad_()
    assert torch.equal(ac.quantize(xg, logits=True), ac.quantize(x, logits=True))
    assert ac.encode(sym, xg, logits=True) == ac.encode(sym, x, logits=True)
    assert xg.grad is None


def test_strided_rows_are_read_as_numpy_reads_them():
    x, sym = logits_rows(7, T=24)
    want = ac.lookup(sym[::2].numpy(), x.numpy()[::2], logits=True)
    got = ac.lookup(sym[::2], x[::2], logits=True)
    assert np.array_equal(got[1].numpy(), want[1].astype(np.int32))
    with pytest.raises(ValueError, match="contiguous"):
        ac.quantize(x.t(), logits=True)


def test_range_coder_takes_tensors():
    x, sym = logits_rows(8, T=30)
    cum, freq = ac.lookup(sym, x, logits=True)
    e = ac.RangeEncoder()
    e.encode(cum, freq)
    want = ac.RangeEncoder()
    want.encode(*ac.lookup(sym.numpy(), x.numpy(), logits=True))
    assert e.get_compressed() == want.get_compressed()
    cdf = ac.quantize(x, logits=True)
    d = ac.RangeDecoder(e.get_compressed())
    assert d.decode(cdf[0]) == int(sym[0])  # one row: an int
    got = d.decode(cdf[1:10].long())  # rows: a tensor (any integer dtype)
    assert isinstance(got, torch.Tensor) and torch.equal(got, sym[1:10])
    got = d.decode_probs(x[10:].bfloat16(), logits=True)
    assert got.dtype == torch.int64 and torch.equal(got, sym[10:])
    assert d.maybe_exhausted()
    with pytest.raises(TypeError, match="integer tensor"):
        ac.RangeDecoder(e.get_compressed()).decode(cdf.float())
    with pytest.raises(ValueError, match="2\\^32"):
        ac.RangeDecoder(e.get_compressed()).decode(cdf[0].long() - 5)


def test_equal_info_windows_with_tensors():
    x, sym = logits_rows(9, T=40, V=50)
    want_w, want_c = ac.equal_info_windows(sym.numpy(), x.numpy(), bits=32, logits=True)
    windows, counts = ac.equal_info_windows(sym, x.bfloat16(), bits=32, logits=True)
    assert windows == want_w and isinstance(counts, torch.Tensor) and np.array_equal(counts.numpy(), want_c)
    out = ac.decode_equal_info_windows(windows, counts, x, bits=32, logits=True)
    assert isinstance(out, torch.Tensor) and torch.equal(out, sym)

    # a callable model: a toy bigram model in torch, given the window's tokens as a tensor
    table = torch.from_numpy(np.random.default_rng(10).normal(size=(51, 50)).astype(np.float32)).bfloat16()
    seen = []

    def model(window):
        seen.append(type(window))
        return table[50 if len(window) == 0 else int(window[-1])]

    windows, counts = ac.equal_info_windows(sym, model, bits=32, logits=True)
    assert seen and all(t is torch.Tensor for t in seen)
    out = ac.decode_equal_info_windows(windows, counts, model, bits=32, logits=True)
    assert torch.equal(out, sym)
    np_model = lambda w: table[50 if len(w) == 0 else int(w[-1])].float().numpy()  # noqa: E731
    assert (windows, counts.tolist()) == (lambda r: (r[0], r[1].tolist()))(
        ac.equal_info_windows(sym.numpy(), np_model, bits=32, logits=True))


def test_bad_tensors_raise_clear_errors():
    x, sym = logits_rows(11)
    with pytest.raises(TypeError, match="symbols must be integers"):
        ac.lookup(sym.float(), x, logits=True)
    with pytest.raises(ValueError, match="shape"):
        ac.lookup(sym, x[None], logits=True)
    with pytest.raises(ValueError, match="rows"):
        ac.encode(sym[:-1], x, logits=True)
    with pytest.raises(TypeError, match="float32 or float64"):
        ac.quantize(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="symbols"):
        ac.Decoder(ac.encode(sym, x, logits=True)).decode(x[0, :-1])


def test_numpy_in_numpy_out_with_torch_imported():
    x, sym = logits_rows(12)
    assert isinstance(ac.quantize(x.numpy(), logits=True), np.ndarray)
    assert ac.quantize(x.numpy(), logits=True).dtype == np.uint32
    assert isinstance(ac.decode(ac.encode(sym.numpy(), x.numpy(), logits=True), x.numpy()), np.ndarray)


def test_a_torch_gpu_tensor_is_read_on_the_host_where_ccomp_has_no_gpu(monkeypatch):
    """Where ccomp's CUDA kernels cannot run, a torch CUDA tensor takes the host path (same bits);
    other CUDA arrays still raise (tests/test_ac_gpu.py).  The CPU tensors here pose as CUDA ones:
    they pass through torch_io's conversion as tensors, as CUDA tensors do, and say they are on a GPU."""
    from ccomp import _torchio, cuda

    real = _torchio.to_numpy

    def as_cuda_tensors_are(t, widen=False, host=False):
        if host:
            return real(t, widen, host)
        t = t.detach()
        return t.float() if t.dtype == torch.bfloat16 or (widen and t.dtype == torch.float16) else t

    monkeypatch.setattr(_torchio, "to_numpy", as_cuda_tensors_are)
    monkeypatch.setattr(ac, "_on_cuda", lambda x: isinstance(x, torch.Tensor))
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    x, sym = logits_rows(13, T=20)
    want = ac.lookup(sym.numpy(), x.numpy(), logits=True)
    got = ac.lookup(sym, x, logits=True)
    assert np.array_equal(got[1].numpy(), want[1].astype(np.int32))
    data = ac.encode(sym, x.bfloat16(), logits=True)
    assert data == ac.encode(sym.numpy(), x.numpy(), logits=True)
    assert torch.equal(ac.decode(data, x), sym)
    d = ac.Decoder(data)
    assert d.decode(x[0]) == int(sym[0]) and torch.equal(d.decode_batch(x[1:]), sym[1:])
