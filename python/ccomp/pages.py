"""Real document pages as patch tokens, for ccomp.tokens.

A multimodal document model cuts a high-resolution page into sub-images of
448 x 448 pixels and each sub-image into 14 x 14 patches, one token per patch.
This module does the same with real PDFs, in NumPy alone:

- :func:`render_pages` renders PDF pages with ``pdftoppm`` (Debian's
  poppler-utils) and reads the PPM/PGM files it writes;
- :func:`sub_images` cuts a page into ``size`` x ``size`` sub-images, padding
  the last row and column with white;
- :func:`patch_tokens` turns sub-images into raw-pixel patch tokens
  ``[B, (size / patch)^2, patch * patch * C]`` (float32 in [0, 1]);
- :func:`saliency` gives each patch a weight (the standard deviation of its
  pixels): a stand-in for the [CLS] attention of a vision encoder, since none
  is bundled. Blank patches get 0, ink-rich patches the most.
- :func:`page_tokens` does all of it for one page; :func:`bundled_pdfs` gives the
  real PDFs bundled with ccomp (:mod:`ccomp.datasets`: mathematical exercise documents from ProofNet,
  MIT licence);
- :func:`minilm_tokens` gives a second real source: the hidden states of the
  all-MiniLM-L6-v2 text encoder (:mod:`ccomp.minilm`) on real text, [B, N, 384].

On raw-pixel tokens a blank sub-image is N identical white patches (cosine 1
with each other), so its information density is 0; text patches differ from
one another, but a nearly blank patch (a little ink on white) still has a
cosine close to 1 with the blank ones, which is why density on raw pixels needs
a threshold near 1 (:data:`TEXT_THRESHOLD`, see tests/test_pages.py).

    >>> from ccomp import pages
    >>> p = pages.page_tokens(pages.bundled_pdfs()[0], page=2)   # Artin.pdf, 100 dpi
    >>> p.image.shape, p.sub_images.shape, p.tokens.shape
    ((1100, 850, 3), (6, 448, 448, 3), (6, 1024, 588))
    >>> p.grid[-1].tolist(), float(p.tokens[-1].min())           # the bottom right is blank paper
    ([2, 1], 1.0)
"""
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from ._args import finite as _finite
from ._args import flag as _flag
from ._args import path as _path
from ._args import integer as _integer
from ._torchio import torch_io

__all__ = ["render_pages", "read_pnm", "sub_images", "patch_tokens", "saliency", "page_tokens", "PageTokens",
           "bundled_pdfs", "minilm_tokens", "SUB_IMAGE", "PATCH", "DEFAULT_DPI", "TEXT_THRESHOLD"]

SUB_IMAGE = 448
PATCH = 14
# A US-letter page (8.5 x 11 in) at 100 dpi is 850 x 1100 pixels: 2 x 3 sub-images of 448 x 448.
DEFAULT_DPI = 100
# The similarity threshold that separates blank from text sub-images on raw-pixel tokens (gray or RGB,
# 100 dpi): see tests/test_pages.py for the densities it gives on the bundled pages.
TEXT_THRESHOLD = 0.99

_INSTALL_HINT = "apt-get install poppler-utils"


# ---------------------------------------------------------------- rendering

def _pdftoppm():
    path = shutil.which("pdftoppm")
    if path is None:
        raise RuntimeError(f"rendering PDF pages needs pdftoppm (poppler-utils), which is not installed: "
                           f"{_INSTALL_HINT}")
    return path


def _pnm_header(data):
    """(magic, width, height, maxval, offset of the pixels) of a binary PNM file (comments allowed)."""
    fields, pos = [], 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace() and data[pos:pos + 1] != b"#":
            pos += 1
        if start == pos:
            raise ValueError("truncated PNM header")
        fields.append(data[start:pos])
    magic = fields[0].decode("ascii", "replace")
    # plain decimal digits only: int() also takes "-1", "+5" and "1_0" (a negative width reached NumPy's reshape)
    if not all(f.isdigit() and len(f) <= 12 for f in fields[1:]):
        raise ValueError(f"bad PNM header fields {[f[:20] for f in fields[1:]]}: width, height and maxval must be "
                         f"decimal numbers")
    width, height, maxval = (int(f) for f in fields[1:])
    return magic, width, height, maxval, pos + 1  # one whitespace byte ends the header


def read_pnm(path_or_bytes):
    """A binary PGM (P5) or PPM (P6) image with 8-bit samples as a uint8 array
    [H, W, 1] (gray) or [H, W, 3] (RGB)."""
    data = path_or_bytes
    if isinstance(data, (bool, int, float)) or data is None:  # an int would be opened as a file descriptor
        raise TypeError(f"path_or_bytes must be a path or bytes, got {type(data).__name__}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        with open(_path("path_or_bytes", path_or_bytes), "rb") as f:
            data = f.read()
    data = bytes(data)
    magic, width, height, maxval, offset = _pnm_header(data)
    channels = {"P5": 1, "P6": 3}.get(magic)
    if channels is None:
        raise ValueError(f"expected a binary PGM (P5) or PPM (P6) file, got magic {magic!r}")
    if not 0 < maxval < 256:
        raise ValueError(f"only 8-bit PNM is supported, got maxval {maxval}")
    need = width * height * channels
    if len(data) - offset < need:
        raise ValueError(f"truncated PNM: {len(data) - offset} pixel bytes, expected {need}")
    return np.frombuffer(data, dtype=np.uint8, count=need, offset=offset).reshape(height, width, channels).copy()


def render_pages(pdf, pages, dpi=DEFAULT_DPI, gray=False):
    """Render pages of a PDF with pdftoppm: a list of uint8 arrays [H, W, 3]
    (RGB) or [H, W, 1] (``gray=True``), one per page.

    ``pages`` is a page number or a sequence of them, counted from 1 as
    pdftoppm does.  RuntimeError when pdftoppm is missing (install it with
    ``apt-get install poppler-utils``); ValueError for a page out of range.
    """
    if isinstance(pages, (int, np.integer)) and not isinstance(pages, (bool, np.bool_)):
        pages = [pages]
    if isinstance(pages, (str, bytes)) or not hasattr(pages, "__iter__"):
        raise TypeError(f"pages must be a page number or a sequence of them, got {type(pages).__name__}")
    pages = [_integer("pages", p) for p in pages]
    if not pages or min(pages) < 1 or max(pages) > 1 << 31:
        raise ValueError(f"pages must be page numbers counted from 1 (at most 2^31), got {pages[:8]}")
    dpi = _integer("dpi", dpi, 1, 2400)
    gray = _flag("gray", gray)
    pdf = _path("pdf", pdf)
    exe = _pdftoppm()
    if not os.path.isfile(pdf):
        raise FileNotFoundError(f"{pdf}: no such PDF file")
    out = []
    with tempfile.TemporaryDirectory(prefix="ccomp-pages-") as tmp:
        for p in pages:
            prefix = os.path.join(tmp, f"page{p}")
            cmd = [exe, "-r", str(dpi), "-f", str(p), "-l", str(p), "-singlefile"]
            if gray:
                cmd.append("-gray")
            proc = subprocess.run(cmd + [pdf, prefix], capture_output=True, text=True)
            path = prefix + (".pgm" if gray else ".ppm")
            if proc.returncode != 0 or not os.path.exists(path):
                msg = proc.stderr.strip() or f"exit status {proc.returncode}"
                raise ValueError(f"pdftoppm could not render page {p} of {pdf}: {msg}")
            out.append(read_pnm(path))
    return out


# ---------------------------------------------------------------- tokens

@torch_io(host=True)
def sub_images(page, size=SUB_IMAGE, fill=255):
    """Cut a page [H, W] or [H, W, C] into size x size sub-images, row by row,
    padding the last row and column with ``fill`` (white).

    Returns (tiles [B, size, size, C] of the page's dtype, grid [B, 2] int64
    holding each tile's (row, col) in the grid of ceil(H / size) x ceil(W / size)).
    A torch page (any device, bfloat16 included) gives torch tensors on its device.
    """
    a = np.asarray(page)
    if a.dtype.kind not in "uif":
        raise TypeError(f"page must be a numeric image array, got dtype {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"page must be [H, W] or [H, W, C], got shape {np.shape(page)}")
    size = _integer("size", size, 1, 1 << 16)
    if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, (int, float, np.integer, np.floating)):
        raise TypeError(f"fill must be a number, got {type(fill).__name__}")
    lo, hi = (np.iinfo(a.dtype).min, np.iinfo(a.dtype).max) if a.dtype.kind in "ui" else (-np.inf, np.inf)
    if not (lo <= fill <= hi) or (a.dtype.kind in "ui" and fill != int(fill)):
        raise ValueError(f"fill must be a value of the page's dtype {a.dtype}, got {fill!r}")
    h, w, c = a.shape
    rows, cols = -(-h // size), -(-w // size)
    padded = np.full((rows * size, cols * size, c), fill, dtype=a.dtype)
    padded[:h, :w] = a
    tiles = padded.reshape(rows, size, cols, size, c).transpose(0, 2, 1, 3, 4).reshape(rows * cols, size, size, c)
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), axis=-1).reshape(-1, 2)
    return np.ascontiguousarray(tiles), grid.astype(np.int64)


@torch_io(host=True)
def patch_tokens(images, patch=PATCH):
    """Raw-pixel patch tokens: sub-images [B, S, S, C] (or [B, S, S]) -> float32
    [B, (S / patch)^2, patch * patch * C] in [0, 1] (uint8 divided by 255).
    Patches are in row-major order; inside a token the pixels are row-major
    with the channels innermost, as a ViT's patch embedding unfolds them.  Torch images give a
    tensor on their device (float32 for integer images, else the images' float dtype)."""
    a = np.asarray(images)
    if a.dtype.kind not in "uif":
        raise TypeError(f"images must be a numeric array, got dtype {a.dtype}")
    patch = _integer("patch", patch, 1, 1 << 16)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[1] != a.shape[2]:
        raise ValueError(f"images must be [B, S, S, C] or [B, S, S], got shape {np.shape(images)}")
    b, s, _, c = a.shape
    if s % patch:
        raise ValueError(f"the sub-image size {s} is not a multiple of patch={patch}")
    g = s // patch
    t = a.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, patch * patch * c)
    if a.dtype == np.uint8:
        return t.astype(np.float32) / np.float32(255)
    return t.astype(np.float32)


@torch_io(host=True)
def saliency(tokens):
    """Per-patch weight: the standard deviation of the patch's pixels, float32
    [B, N] (>= 0, 0 for a uniform patch).  A stand-in for [CLS] attention,
    since no vision encoder is bundled: it is highest where there is ink.  Torch tokens give a
    tensor on their device, in their float dtype."""
    t = np.asarray(tokens)
    if t.dtype.kind not in "uif":
        raise TypeError(f"tokens must be a numeric array, got dtype {t.dtype}")
    if t.ndim not in (2, 3) or t.shape[-1] == 0:
        raise ValueError(f"tokens must have shape [B, N, D] (or [N, D]) with D >= 1, got shape {t.shape}")
    t = t.astype(np.float64)
    _finite("tokens", t)
    return t.std(axis=-1).astype(np.float32)


@dataclass
class PageTokens:
    """One rendered page cut into sub-images and patch tokens."""
    pdf: str
    page: int
    dpi: int
    image: np.ndarray       # uint8 [H, W, C]
    sub_images: np.ndarray  # uint8 [B, size, size, C]
    grid: np.ndarray        # int64 [B, 2]: (row, col) of each sub-image
    tokens: np.ndarray      # float32 [B, (size / patch)^2, patch^2 C] in [0, 1]
    saliency: np.ndarray    # float32 [B, N]


def page_tokens(pdf, page, dpi=DEFAULT_DPI, size=SUB_IMAGE, patch=PATCH, gray=False):
    """Render one page (counted from 1) and return its :class:`PageTokens`."""
    page = _integer("page", page, 1, 1 << 31)
    size = _integer("size", size, 1, 1 << 16)
    patch = _integer("patch", patch, 1, 1 << 16)
    image = render_pages(pdf, [page], dpi=dpi, gray=gray)[0]
    tiles, grid = sub_images(image, size)
    tokens = patch_tokens(tiles, patch)
    return PageTokens(os.fspath(pdf), int(page), int(dpi), image, tiles, grid, tokens, saliency(tokens))


def bundled_pdfs():
    """Paths of the real PDFs bundled with ccomp, sorted by name (:func:`ccomp.datasets.pdfs`)."""
    from . import datasets
    return datasets.pdfs()


# ---------------------------------------------------------------- text tokens

def minilm_tokens(text=None, tokens=128, windows=4, layer=6, model=None):
    """Real text tokens: the hidden states of all-MiniLM-L6-v2 on consecutive
    windows of real text, float32 [windows, tokens, 384].

    Each window is ``[CLS]`` + ``tokens - 2`` consecutive wordpieces + ``[SEP]``,
    encoded on its own; row 0 of each window is the [CLS] state (usable as
    ``cls=``) and the last row the [SEP] state.  ``layer`` 0 is the embeddings'
    output, 1..6 the layers' outputs.  ``text`` defaults to the Canterbury
    prose of :func:`ccomp.minilm.default_text`.
    """
    from . import minilm

    if text is not None and not isinstance(text, str):
        raise TypeError(f"text must be a str or None, got {type(text).__name__}")
    if model is not None and not hasattr(model, "forward"):
        raise TypeError(f"model must be a ccomp.minilm model or None, got {type(model).__name__}")
    tokens = _integer("tokens", tokens, 3, 1 << 20)
    windows = _integer("windows", windows, 1, 1 << 20)
    layer = _integer("layer", layer, 0, 1 << 10)
    m = model or minilm.load()
    if not 3 <= tokens <= m.max_positions:
        raise ValueError(f"tokens must be in [3, {m.max_positions}], got {tokens}")
    if windows < 1:
        raise ValueError(f"windows must be positive, got {windows}")
    if not 0 <= layer <= m.layers:
        raise ValueError(f"layer must be in [0, {m.layers}], got {layer}")
    if text is None:
        text = minilm.default_text()
    tok = m.tokenizer
    per = tokens - 2
    ids = []
    for t in tok.iter_tokens(text):
        ids.append(tok.vocab.get(t, tok.unk_id))
        if len(ids) == per * windows:
            break
    if len(ids) < per * windows:
        raise ValueError(f"the text gives {len(ids)} wordpieces, fewer than windows * (tokens - 2) = {per * windows}")
    out = np.empty((windows, tokens, m.hidden_size), dtype=np.float32)
    for w in range(windows):
        window = np.asarray([tok.cls_id] + ids[w * per:(w + 1) * per] + [tok.sep_id], dtype=np.int64)
        out[w] = m.forward(window)["hidden_states"][layer]
    return out
