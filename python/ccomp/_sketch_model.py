"""Model-level sketching (torch): :func:`sketch_model` replaces a model's ``nn.Linear`` layers by
:class:`ccomp.sketch.SketchedLinear`, fitted on real calibration activations; :func:`save_sketched`
and :func:`load_sketched` write and read the sketched model (safetensors and JSON).

Loaded on first use of ``ccomp.sketch.sketch_model`` / ``save_sketched`` / ``load_sketched``.
"""
import fnmatch
import json
import os
import re
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from . import _sketch_host as _host
from ._args import flag as _flag
from ._sketch_torch import SketchedLinear

__all__ = ["sketch_model", "save_sketched", "load_sketched", "sketched_layers"]

FORMAT = "ccomp-sketch"
FORMAT_VERSION = 1
QUANT_METHOD = "ccomp_sketch"
CONFIG_FILE = "ccomp_sketch.json"
WEIGHTS_FILE = "ccomp_sketch.safetensors"
_FIT_KEYS = ("damping", "exponent", "block_size", "iters")
_HEAD_NAMES = ("lm_head", "classifier", "score", "qa_outputs")
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}


# ------------------------------------------------------------------ which layers


def _patterns(name, value):
    """A list of matchers from None, a str (glob), an re.Pattern, a callable or a list of them."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    for p in items:
        if not isinstance(p, (str, re.Pattern)) and not callable(p):
            raise TypeError(f"{name} must be a glob string, a compiled regex, a callable(name, module) or a list of "
                            f"them, got {type(p).__name__}")
    return items


def _matches(patterns, name, module):
    for p in patterns:
        if isinstance(p, str):
            if fnmatch.fnmatchcase(name, p):
                return True
        elif isinstance(p, re.Pattern):
            if p.fullmatch(name):
                return True
        elif p(name, module):
            return True
    return False


def _default_skips(model):
    """{name: (never, why)} of the Linear layers left as they are: output embeddings and classifier heads
    (unless `include` names them), Linear layers whose weight another module also holds (tied weights) and
    the out_proj of nn.MultiheadAttention, which reads its weight without calling it (never)."""
    heads = []
    for getter in ("get_output_embeddings", "get_classifier"):
        f = getattr(model, getter, None)
        if callable(f):
            try:
                m = f()
            except (AttributeError, NotImplementedError, TypeError):
                m = None
            if isinstance(m, nn.Module):
                heads.append(m)
    holders = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for p in mod.parameters(recurse=False):
            holders.setdefault(id(p), set()).add(mname)
    skips = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            skips[f"{name}.out_proj" if name else "out_proj"] = (
                True, "nn.MultiheadAttention reads its out_proj weight directly, without calling the layer")
        if not isinstance(mod, nn.Linear) or name in skips:
            continue
        if len(holders.get(id(mod.weight), ())) > 1:
            skips[name] = (True, "its weight is tied to " + ", ".join(sorted(holders[id(mod.weight)] - {name}))
                           + " (sketching it would untie them)")
        elif any(mod is h for h in heads) or name.rsplit(".", 1)[-1] in _HEAD_NAMES:
            skips[name] = (False, "an output head")
    return skips


def _select(model, include, exclude):
    inc, exc = _patterns("include", include), _patterns("exclude", exclude)
    skips = _default_skips(model)
    chosen = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or isinstance(mod, SketchedLinear):
            continue
        named = inc is not None and _matches(inc, name, mod)
        if inc is not None and not named:
            continue
        if exc is not None and _matches(exc, name, mod):
            continue
        if name in skips:
            never, why = skips[name]
            if never and named:
                raise ValueError(f"layer {name!r} cannot be sketched: {why}")
            if never or not named:
                continue
        chosen.append((name, mod))
    return chosen


# ------------------------------------------------------------------ calibration


class _Enough(Exception):
    """Raised by the hooks once every layer of a pass has seen its input: the rest of the forward is not needed."""


def _batches(calibration, batch_size):
    """A re-iterable list of model inputs."""
    if isinstance(calibration, torch.Tensor):
        t = calibration
        if t.dim() == 1 and not t.is_floating_point():
            t = t[None]  # one sequence of token ids
        if t.dim() == 0 or t.shape[0] == 0:
            raise ValueError(f"calibration holds no input, got shape {tuple(calibration.shape)}")
        return [t[i:i + batch_size] for i in range(0, t.shape[0], batch_size)]
    if isinstance(calibration, np.ndarray):
        return _batches(torch.from_numpy(calibration), batch_size)
    if isinstance(calibration, Mapping):
        return [calibration]
    if isinstance(calibration, (str, bytes)) or not hasattr(calibration, "__iter__"):
        raise TypeError("calibration must be token ids / an input batch (a tensor), a dict of model inputs or an "
                        f"iterable of them (a DataLoader), got {type(calibration).__name__}")
    out = list(calibration) if isinstance(calibration, Iterator) else calibration
    if isinstance(out, (list, tuple)) and not out:
        raise ValueError("calibration is empty")
    return out


def _to(v, device):
    return v.to(device) if isinstance(v, torch.Tensor) else v


def _run(model, batch, device):
    if isinstance(batch, Mapping):
        return model(**{k: _to(v, device) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):  # (inputs, labels) of a DataLoader
        if not batch:
            raise ValueError("calibration yielded an empty batch")
        batch = batch[0]
        if isinstance(batch, Mapping):
            return model(**{k: _to(v, device) for k, v in batch.items()})
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"calibration batch must be a tensor or a dict of tensors, got {type(batch).__name__}")
    return model(batch.to(device))


def _gram(model, layers, batches, device):
    """{name: (sum of x^T x in float64 [in, in], rows)} of every layer's inputs over the batches."""
    acc = {name: [torch.zeros(m.in_features, m.in_features, dtype=torch.float64), 0] for name, m in layers}
    fired = set()

    def hook_for(name):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            x2 = x.detach().reshape(-1, x.shape[-1]).to("cpu", torch.float64)
            acc[name][0].addmm_(x2.T, x2)
            acc[name][1] += x2.shape[0]
            fired.add(name)
            if len(fired) == len(acc):
                raise _Enough
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name), with_kwargs=True) for name, m in layers]
    try:
        for batch in batches:
            fired.clear()
            try:
                _run(model, batch, device)
            except _Enough:
                pass
    finally:
        for h in handles:
            h.remove()
    for name, (S, n) in acc.items():
        if n == 0:
            raise ValueError(f"layer {name!r} received no input in the calibration forward passes (is it used by "
                             "the model's forward?)")
    return acc


def _chunks(layers, budget):
    """Consecutive runs of layers whose [in, in] float64 Gram matrices fit in `budget` bytes (one layer at least)."""
    chunk, used = [], 0
    for name, m in layers:
        b = 8 * m.in_features ** 2
        if chunk and used + b > budget:
            yield chunk
            chunk, used = [], 0
        chunk.append((name, m))
        used += b
    if chunk:
        yield chunk


# ------------------------------------------------------------------ sketch_model


def _table_dtype(dtype, weight):
    if dtype is not None:
        if dtype not in _host.DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_host.DTYPES)} or None, got {dtype!r}")
        return dtype
    name = str(weight.dtype).replace("torch.", "")
    return name if name in _host.DTYPES else "float32"


def _errors(W, s, S):
    """(relative weight error, relative output error on the calibration inputs or None)."""
    W = W.astype(np.float64)
    D = W - s.dequantize(np.float64)
    werr = float(np.linalg.norm(D) / max(np.linalg.norm(W), 1e-300))
    if S is None:
        return werr, None
    den = float(np.sum((W @ S) * W))
    return werr, (float(np.sqrt(max(np.sum((D @ S) * D), 0.0) / den)) if den > 0 else None)


def sketch_model(model, bits=4, group_size=128, method="leanquant", *, calibration=None, include=None, exclude=None,
                 dtype=None, batch_size=8, max_memory=512 << 20, progress=False, threads=None, return_report=False,
                 **fit_options):
    """Replace ``model``'s ``nn.Linear`` layers in place by :class:`SketchedLinear` and return ``model``.

    - ``bits`` (2, 3, 4) and ``group_size``: each row of a weight ``[out, in]`` is split into
      ``in / group_size`` groups (``group_size=None``: one group per row); a layer whose
      ``in_features`` is not a multiple of ``group_size`` is a ValueError, raised before any work.
    - ``method``: ``"leanquant"`` (needs ``calibration``), ``"rtn"`` or ``"kmeans"`` (see
      :func:`ccomp.sketch.fit`; ``damping``, ``exponent``, ``block_size``, ``iters`` pass through).
    - ``calibration``: real inputs of the model: token ids ``[batch, seq]`` (or ``[seq]``), an input
      batch (e.g. images ``[B, 3, H, W]``), a dict of model inputs (a tokenizer's output), or an
      iterable of those (a DataLoader; ``(inputs, labels)`` pairs use the inputs).  Tensors are run
      ``batch_size`` rows at a time.  Forward hooks accumulate each selected layer's
      ``sum x^T x`` in float64 (the LeanQuant Hessian ``2 X^T X / n``), never the activations
      themselves.  Every layer is fitted on the inputs the **unsketched** model gives it: the layers
      are captured in chunks whose float64 ``[in, in]`` matrices fit ``max_memory`` bytes (one
      forward pass per chunk, stopped once the chunk's layers have all seen their input), fitted,
      and replaced only after the last chunk, so ``max_memory`` changes time, never the result.
      With ``rtn`` / ``kmeans`` the calibration is optional (it gives the report's output errors).
    - ``include`` / ``exclude``: module names to sketch / to leave; each a glob string
      (``"model.layers.*.mlp.*"``, matched against the whole name), a compiled regex (full match),
      a callable ``(name, module) -> bool``, or a list of them.  By default every ``nn.Linear`` is
      sketched except output heads (``get_output_embeddings()``, timm's ``get_classifier()``, and
      layers named ``lm_head``, ``classifier``, ``score``, ``qa_outputs``), layers whose weight
      is tied to another module (e.g. embeddings) and the ``out_proj`` of ``nn.MultiheadAttention``
      (it reads the weight without calling the layer); ``include`` naming a head sketches it,
      naming a tied layer or such an ``out_proj`` is a ValueError.
    - ``dtype``: the tables' type (default: the layer weight's, float32 for other types).

    ``return_report=True`` gives ``(model, report)``, ``report[name]`` a dict of the layer's
    ``shape``, ``groups``, ``bits``, ``method``, ``weight_error`` (``||W - W_hat|| / ||W||``) and
    ``output_error`` (``||X (W - W_hat)^T|| / ||X W^T||`` on the calibration inputs, None without).
    ``progress=True`` shows a tqdm bar over the layers.

    >>> import torch
    >>> from ccomp import sketch
    >>> torch.manual_seed(0) is not None
    True
    >>> net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> x = torch.randn(256, 64)
    >>> _ = sketch.sketch_model(net, bits=4, group_size=32, calibration=x)
    >>> net[0], net[2].tables.shape
    (SketchedLinear(in_features=64, out_features=32, groups=2, bits=4, bias=True), torch.Size([8, 1, 16]))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in (2, 3, 4):
        raise ValueError(f"bits must be 2, 3 or 4, got {bits!r}")
    if group_size is not None and (isinstance(group_size, bool) or not isinstance(group_size, int)
                                   or group_size < 1):
        raise ValueError(f"group_size must be a positive int or None (one group per row), got {group_size!r}")
    if method not in _host.METHODS:
        raise ValueError(f"method must be one of {', '.join(_host.METHODS)}, got {method!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory < 1:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    progress, return_report = _flag("progress", progress), _flag("return_report", return_report)
    unknown = sorted(set(fit_options) - set(_FIT_KEYS))
    if unknown:
        raise TypeError(f"sketch_model() got unexpected keyword arguments {unknown} (fit options: "
                        f"{', '.join(_FIT_KEYS)})")
    if method == "leanquant" and calibration is None:
        raise ValueError("method='leanquant' needs calibration= (inputs of the model: token ids, a batch, a dict or a "
                         "DataLoader); rtn and kmeans do not")
    batches = None if calibration is None else _batches(calibration, batch_size)
    layers = _select(model, include, exclude)
    if not layers:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(f"no nn.Linear layer of the model matches include={include!r} / exclude={exclude!r} "
                         f"(some Linear layers: {names})")
    groups = {}
    for name, m in layers:
        if group_size is None:
            groups[name] = 1
        elif m.in_features % group_size:
            raise ValueError(f"layer {name!r}: in_features {m.in_features} is not divisible by group_size {group_size} "
                             "(pick a divisor of it, or group_size=None for one group per row)")
        else:
            groups[name] = m.in_features // group_size
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(layers), desc="sketching", unit="layer")
    fitted, report = {}, {}
    was_training = model.training
    model.eval()
    try:
        for chunk in (_chunks(layers, max_memory) if batches is not None else [layers]):
            gram = None
            if batches is not None:
                with torch.no_grad():
                    gram = _gram(model, chunk, batches, device)
            for name, m in chunk:
                W = m.weight.detach().to("cpu", torch.float32).numpy()
                S = None
                kw = dict(fit_options)
                if gram is not None:
                    Sum, n = gram.pop(name)
                    S = Sum.numpy()
                    if method == "leanquant":
                        kw["hessian"] = (S + S.T) / n  # 2 X^T X / n, symmetric to the last bit
                try:
                    s = _host.fit(W, bits, groups[name], method, dtype=_table_dtype(dtype, m.weight), threads=threads,
                                  **kw)
                except ValueError as e:
                    raise ValueError(f"layer {name!r}: {e}") from None
                fitted[name] = s
                werr, oerr = _errors(W, s, S)
                report[name] = {"shape": (m.out_features, m.in_features), "groups": s.groups, "bits": s.bits,
                                "method": method, "weight_error": werr, "output_error": oerr}
                if bar is not None:
                    bar.update(1)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    _guard_save_pretrained(model)
    for name, m in layers:
        new = SketchedLinear(fitted[name], None if m.bias is None else m.bias.detach(), threads)
        new.to(m.weight.device).train(m.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return (model, report) if return_report else model


def _refuse_save_pretrained(*args, **kwargs):
    raise ValueError("this model has ccomp SketchedLinear layers: transformers' save_pretrained would write them, but "
                     "from_pretrained would rebuild them as nn.Linear with re-initialised weights; save it with "
                     "ccomp.sketch.save_sketched(model, path) and load it with ccomp.sketch.load_sketched(path)")


def _guard_save_pretrained(model):
    """Shadow a transformers model's save_pretrained (and so push_to_hub) by an instance attribute that raises
    (``del model.save_pretrained`` brings transformers' method back)."""
    if _is_transformers(model):
        model.save_pretrained = _refuse_save_pretrained


def sketched_layers(model):
    """``{name: SketchedLinear}`` of a model, in module order.

    >>> import torch
    >>> sketched_layers(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    {}
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, SketchedLinear)}


# ------------------------------------------------------------------ save / load


def _is_transformers(model):
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def _dtype_name(t):
    return str(t).replace("torch.", "")


def _model_dtype(model, skip):
    for name, p in model.named_parameters():
        if p.is_floating_point() and not any(name.startswith(s + ".") for s in skip):
            return _dtype_name(p.dtype)
    return "float32"


def save_sketched(model, path):
    """Write a sketched model to the folder ``path`` (created if needed) and return ``path``.

    Files: ``ccomp_sketch.safetensors`` (the whole state dict: each sketched layer's ``tables``,
    ``codes`` and ``bias``, every other weight as it is; a tensor held under several names, such
    as tied embeddings, once) and ``ccomp_sketch.json`` (format, version, the model's dtype, and per
    sketched layer its shape, groups, bits, table dtype, method and bias).  For a transformers
    model also ``config.json``: the model's own config with that sketch config as its
    ``quantization_config`` (``quant_method: "ccomp_sketch"``).  No ``model.safetensors`` is
    written, so ``from_pretrained(path)`` without ccomp raises (no weights file) instead of
    building the model with re-initialised Linear layers; :func:`load_sketched` reads it back.

    >>> import torch, tempfile
    >>> from ccomp import sketch
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 8))
    >>> _ = sketch.sketch_model(net, group_size=8, method="rtn")
    >>> path = sketch.save_sketched(net, tempfile.mkdtemp())
    >>> again = sketch.load_sketched(path, model=torch.nn.Sequential(torch.nn.Linear(16, 8)))
    >>> x = torch.randn(2, 16)
    >>> torch.equal(again(x), net(x))
    True
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    layers = sketched_layers(model)
    if not layers:
        raise ValueError("the model has no SketchedLinear layer: sketch it with ccomp.sketch.sketch_model first "
                         "(an unsketched model saves with its own save_pretrained / torch.save)")
    entries = {name: {"in_features": m.in_features, "out_features": m.out_features, "groups": m.groups,
                      "bits": m.bits, "dtype": _dtype_name(m.tables.dtype), "method": m.info.get("method"),
                      "bias": None if m.bias is None else _dtype_name(m.bias.dtype)}
               for name, m in layers.items()}
    tensors, tied, seen, storages = {}, {}, {}, set()
    for k, v in model.state_dict().items():
        v = v.detach()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if v.numel() and key in seen:
            tied[k] = seen[key]
            continue
        seen[key] = k
        ptr = v.untyped_storage().data_ptr()
        tensors[k] = v.cpu().contiguous() if ptr not in storages or not v.numel() else v.cpu().clone()
        storages.add(ptr)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "quant_method": QUANT_METHOD,
              "weights": WEIGHTS_FILE, "model": "transformers" if _is_transformers(model) else "module",
              "model_class": type(model).__name__, "dtype": _model_dtype(model, layers), "layers": entries,
              "tied": tied}
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt", "ccomp": FORMAT})
    with open(os.path.join(path, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    if config["model"] == "transformers":
        cfg = model.config.to_dict()
        cfg["architectures"] = [type(model).__name__]  # the class to rebuild (a model built from a config has none)
        cfg["quantization_config"] = {k: config[k] for k in ("quant_method", "format", "format_version", "weights",
                                                              "layers")}
        with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=1)
    return path


def _read_config(path):
    file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(file):
        raise ValueError(f"{path!r} is not a sketched model saved by ccomp.sketch.save_sketched ({CONFIG_FILE} is "
                         "missing)")
    try:
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: unreadable sketch config ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else None
        raise ValueError(f"{file} is not a ccomp sketch config (format {got!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{file}: format version {cfg.get('format_version')!r}; this ccomp reads version "
                         f"{FORMAT_VERSION}")
    if not isinstance(cfg.get("layers"), dict) or not isinstance(cfg.get("tied", {}), dict):
        raise ValueError(f"{file}: 'layers' and 'tied' must be objects")
    return cfg


def _transformers_model(path, cfg):
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise ValueError(f"{path!r}: config.json names no transformers architecture this transformers has "
                         f"({archs}); pass model= (the unsketched model) to load_sketched")
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from contextlib import nullcontext as no_init_weights
    with no_init_weights():  # every weight is loaded next
        model = cls._from_config(config, dtype=_TORCH_DTYPES.get(cfg.get("dtype"), torch.float32))
    model.tie_weights()  # as from_pretrained does (tied embeddings stay one tensor)
    return model


def _install(model, layers, threads):
    """Replace the named layers of `model` by blank SketchedLinear layers of the saved layouts."""
    for name, e in layers.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no module {name!r} (saved as a sketched layer): is it the saved "
                             "architecture?") from None
        out, cols = int(e["out_features"]), int(e["in_features"])
        if isinstance(m, SketchedLinear):
            same = (m.out_features, m.in_features, m.groups, m.bits) == (out, cols, e["groups"], e["bits"])
        else:
            same = isinstance(m, nn.Linear) and (m.out_features, m.in_features) == (out, cols)
        if not same:
            raise ValueError(f"module {name!r} is {m!r}; the saved layer is a sketch of a Linear({cols}, {out})")
        if e["dtype"] not in _TORCH_DTYPES or e["bias"] not in (None, *_TORCH_DTYPES):
            raise ValueError(f"layer {name!r}: unknown dtypes {e['dtype']!r} / {e['bias']!r}")
        new = SketchedLinear._blank(out, cols, int(e["groups"]), int(e["bits"]), e["dtype"],
                                    None if e["bias"] is None else _TORCH_DTYPES[e["bias"]], threads)
        new.info = {"method": e.get("method")}
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)


def load_sketched(path, model=None, *, device="cpu", threads=None):
    """Read a model written by :func:`save_sketched`; its logits equal the saved model's exactly.

    A transformers model is rebuilt from ``config.json`` (its architecture class, the saved dtype);
    any other model (timm, a plain ``nn.Module``) needs ``model=``: the unsketched architecture
    (e.g. ``timm.create_model(name, pretrained=False)``), whose listed Linear layers are replaced
    and whose every weight is then loaded.  The state dict must match exactly: a missing or
    unexpected tensor, a module that is not the saved layer's Linear, or a folder without
    ``ccomp_sketch.json`` is a ValueError.  The model comes back in eval mode on ``device``.

    >>> from ccomp import sketch                                   # doctest: +SKIP
    >>> model = sketch.load_sketched("smollm2-sketched")           # doctest: +SKIP
    """
    from safetensors.torch import load_file

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    cfg = _read_config(path)
    if model is None:
        if cfg.get("model") != "transformers":
            raise ValueError(f"{path!r} holds a sketched {cfg.get('model_class')} (not a transformers model): pass "
                             "model= (the unsketched architecture, e.g. timm.create_model(name, pretrained=False))")
        model = _transformers_model(path, cfg)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    _install(model, cfg["layers"], threads)
    weights = os.path.join(path, cfg.get("weights", WEIGHTS_FILE))
    if not os.path.isfile(weights):
        raise ValueError(f"{weights} is missing")
    tensors = load_file(weights)
    tied = cfg.get("tied", {})
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"the saved weights do not fit the model: missing {missing[:6]}"
                         f"{'...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
                         f"{'...' if len(unexpected) > 6 else ''}")
    if tied:
        state = model.state_dict()
        with torch.no_grad():
            for k, src in tied.items():
                if k not in state or src not in tensors:
                    raise ValueError(f"tied tensor {k!r} -> {src!r} does not fit the model")
                state[k].copy_(tensors[src])
    _guard_save_pretrained(model)
    return model.to(device).eval()
