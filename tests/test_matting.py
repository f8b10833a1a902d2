"""Soft edges measured against ground-truth alpha (no trained weights needed), ViTMatte against transformers' own path,
and the bad inputs of the refinement stage."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matting_scenes import scene
from PIL import Image

from grounded_sam import CancelledError, InputError
from grounded_sam.matting import RefineSettings, estimate_foreground, load_vitmatte, refine_alpha
from grounded_sam.matting.metrics import connectivity_error, gradient_error, mse, sad
from grounded_sam.matting.trimap import FOREGROUND, UNKNOWN, make_trimap
from grounded_sam.media.images import load_image_file

BACKGROUNDS = ("bus", "zidane", "picture1", "picture4")
BAND = {"detail_erode": 12.0, "detail_dilate": 24.0}


@pytest.fixture(scope="module")
def scenes():
    folder = Path(__file__).resolve().parents[2] / "shared" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here: the scenes are composited over the shared photos")
    return [scene(load_image_file(folder / f"{name}.jpg")[0].numpy(), seed) for seed, name in enumerate(BACKGROUNDS)]


def errors(alpha: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"sad": sad(alpha, truth), "mse": mse(alpha, truth), "gradient": gradient_error(alpha, truth), "connectivity": connectivity_error(alpha, truth)}


def test_weight_free_matting_against_the_true_alpha(scenes):
    """On the procedural set (hair, soft edges, a hole, a veil; SAM-like coarse masks): closed-form matting cuts the
    binary mask's SAD by at least 40 %, and improves every other error too."""
    table = {}
    for method in ("none", "guided_filter", "closed_form"):
        rows = [errors(refine_alpha(s.image, s.mask, RefineSettings(method, **BAND, black_point=0.0, white_point=1.0)).alpha.astype(np.float64), s.alpha)
                for s in scenes]  # fmt: skip
        table[method] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print(json.dumps(table, indent=1))
    binary, solved = table["none"], table["closed_form"]
    assert solved["sad"] <= 0.6 * binary["sad"], table
    assert all(solved[k] < binary[k] for k in binary), table
    assert table["guided_filter"]["gradient"] < binary["gradient"], table  # smoother, truer edges, if not truer coverage


def test_foreground_colours_beat_the_image_inside_the_band(scenes):
    """Foreground estimation: the object's own colours where it is see-through, not the old background mixed in."""
    for s in scenes:
        matte = refine_alpha(s.image, s.mask, RefineSettings("closed_form", **BAND))
        band = make_trimap(s.mask, **{"erode": BAND["detail_erode"], "dilate": BAND["detail_dilate"]}) == UNKNOWN
        weight = s.alpha[..., None]
        ours = np.abs(weight * matte.foreground - weight * s.foreground)[band].sum()
        naive = np.abs(weight * (s.image / 255.0) - weight * s.foreground)[band].sum()  # a cut-out of image * alpha
        assert ours < 0.8 * naive, (ours, naive)


def test_levels_and_what_the_trimap_is_sure_of(scenes):
    s = scenes[0]
    matte = refine_alpha(s.image, s.mask, RefineSettings("closed_form", **BAND, black_point=0.2, white_point=0.8))
    trimap = make_trimap(s.mask, BAND["detail_erode"], BAND["detail_dilate"])
    assert (matte.alpha[trimap == FOREGROUND] == 1).all() and (matte.alpha[trimap == 0] == 0).all()
    raw = refine_alpha(s.image, s.mask, RefineSettings("closed_form", **BAND, black_point=0.0, white_point=1.0)).alpha
    expected = np.clip((raw - 0.2) / 0.6, 0, 1)
    assert np.abs(matte.alpha - expected).max() < 1e-5
    assert ((raw > 0.2) & (raw < 0.8)).any(), "the band must hold partial alpha for the levels to show"


def test_max_megapixels_refines_smaller_and_returns_full_size(scenes):
    s = scenes[3]
    big = np.asarray(Image.fromarray(s.image).resize((1280, 960), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(s.mask).resize((1280, 960), Image.NEAREST))
    truth = np.asarray(Image.fromarray(s.alpha.astype(np.float32)).resize((1280, 960), Image.BILINEAR), dtype=np.float64)
    reduced = refine_alpha(big, mask, RefineSettings("closed_form", **BAND, max_megapixels=0.3))
    assert reduced.alpha.shape == (960, 1280) and reduced.foreground.shape == (960, 1280, 3)
    trimap = make_trimap(mask, BAND["detail_erode"], BAND["detail_dilate"])
    assert (reduced.alpha[trimap == FOREGROUND] == 1).all() and (reduced.alpha[trimap == 0] == 0).all()  # sure at full size
    assert sad(reduced.alpha, truth) < 0.75 * sad(mask.astype(np.float64), truth)


def test_bad_input_is_explained(scenes, monkeypatch):
    s = scenes[0]
    with pytest.raises(InputError, match="the mask is 320x240 but the image is 640x480"):
        refine_alpha(s.image, s.mask[:240, :320])
    empty = refine_alpha(s.image, np.zeros_like(s.mask))
    assert not empty.alpha.any() and empty.alpha.shape == s.mask.shape
    full = refine_alpha(s.image, np.ones_like(s.mask))
    assert (full.alpha == 1).all() and np.allclose(full.foreground, s.image / 255.0)
    with pytest.raises(InputError, match="no band to refine|there is none to refine"):
        RefineSettings("closed_form", detail_erode=0, detail_dilate=0)
    assert RefineSettings("none", detail_erode=0, detail_dilate=0).method == "none"  # levels only: fine
    with pytest.raises(InputError, match="black_point < white_point"):
        RefineSettings(black_point=0.7, white_point=0.3)
    monkeypatch.setitem(sys.modules, "pymatting", None)  # as if it were not installed
    with pytest.raises(InputError, match="pip install pymatting"):
        refine_alpha(s.image, s.mask, RefineSettings("closed_form", **BAND))


def test_vitmatte_matches_transformers_processor_and_model(vitmatte_random, scenes):
    """Our ViTMatte step on identical random weights: the band's alpha is what transformers' processor + model give."""
    from transformers import VitMatteForImageMatting, VitMatteImageProcessor

    s = scenes[1]
    ours = refine_alpha(s.image, s.mask, RefineSettings("vitmatte", **BAND, black_point=0.0, white_point=1.0), load_vitmatte(vitmatte_random, "cpu"))
    trimap = make_trimap(s.mask, BAND["detail_erode"], BAND["detail_dilate"])
    processor = VitMatteImageProcessor.from_pretrained(vitmatte_random)
    model = VitMatteForImageMatting.from_pretrained(vitmatte_random).eval()
    trimap_png = Image.fromarray(np.select([trimap == FOREGROUND, trimap == UNKNOWN], [255, 128], 0).astype(np.uint8))  # 0 / 128 / 255
    inputs = processor(images=Image.fromarray(s.image), trimaps=trimap_png, return_tensors="pt")
    with torch.no_grad():
        theirs = model(**inputs).alphas[0, 0, : s.image.shape[0], : s.image.shape[1]].numpy()
    band = trimap == UNKNOWN
    assert np.abs(ours.alpha[band] - np.clip(theirs[band], 0, 1)).max() < 1e-5
    assert ours.alpha[band].std() > 0.01, "random weights must give an alpha that varies, or the check proves nothing"


def test_foreground_of_a_binary_matte_is_the_image(scenes):
    s = scenes[2]
    assert np.array_equal(estimate_foreground(s.image, s.mask.astype(np.float64)), s.image / 255.0)


def test_a_stop_lands_inside_the_solvers(scenes, vitmatte_random):
    """The host's stop question is asked while the solvers run (the closed-form solver's iterations, ViTMatte's
    blocks), not only before a frame: a stop button answers within a fraction of a frame."""
    s = scenes[0]
    for method, model in (("closed_form", None), ("vitmatte", load_vitmatte(vitmatte_random, "cpu"))):
        asked: list[str] = []

        def stop_at_third_question(asked: list[str] = asked) -> bool:
            asked.append("stop?")
            return len(asked) >= 3  # the first question comes before the trimap: the third is inside the solver

        with pytest.raises(CancelledError):
            refine_alpha(s.image, s.mask, RefineSettings(method, **BAND), model, stop_at_third_question)
        assert len(asked) == 3, method
        assert refine_alpha(s.image, s.mask, RefineSettings(method, **BAND), model, lambda: False).alpha.shape == s.mask.shape
