"""Operations on an open image (fiji/operations.py) in real ImageJ 1.53t: the consensus of the experts'
ROIs in one call (through consensus.consensus_of), and an ensemble's prediction in the overlay.
"""

from __future__ import annotations


import numpy as np
import pytest
import roifile

from fiji_consensus import fiji, matching

from ._common import REPO


@pytest.mark.imagej
def test_consensus_in_one_call(ij, sample_crop):
    from fiji_consensus import consensus as cons

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    out, res = fiji.consensus(imp, min_size=30, return_result=True)
    assert out is imp and res["experts"] == experts
    expected = matching.label_objects(cons.staple(masks).probability > 0.5, min_size=30)
    assert np.array_equal(res["labels"], expected)
    names = [r.name for r in fiji.pull_rois(imp)]
    assert sum(nm.startswith("consensus:") for nm in names) == expected.max() > 0
    # idempotent: the consensus outlines are not taken for an expert
    _, res2 = fiji.consensus(imp, min_size=30, return_result=True)
    assert res2["experts"] == experts and np.array_equal(res2["labels"], res["labels"])
    _, maj = fiji.consensus(imp, method="majority", return_result=True)
    assert np.array_equal(maj["consensus"], matching.label_objects(cons.majority_vote(masks)) > 0)
    _, obj = fiji.consensus(imp, method="objects", min_size=30, return_result=True)
    assert obj["labels"].max() > 0 and obj["probability"] is None
    lone = fiji.to_imageplus(image)
    fiji.push_consensus(lone, None, {"A": masks[0]})
    with pytest.raises(ValueError, match="at least 2 experts"):
        fiji.consensus(lone)
    with pytest.raises(ValueError, match="has no expert ROIs"):
        fiji.consensus(fiji.to_imageplus(image))
    with pytest.raises(ValueError, match="method must be"):
        fiji.consensus(imp, method="vote")


@pytest.mark.imagej
def test_consensus_options_reach_the_consensus(ij, sample_crop):
    """fiji.consensus goes through the one switch, consensus.consensus_of: STAPLE's prior and max_iter and the
    ignore regions now count (issue 18: fiji's own copy of the switch took none of them)."""
    from fiji_consensus import consensus as cons

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    _, default = fiji.consensus(imp, return_result=True)
    _, res = fiji.consensus(imp, prior=0.6, max_iter=2, return_result=True)
    expected = cons.staple(masks, prior=0.6, max_iter=2)
    assert np.allclose(res["probability"], expected.probability, atol=1e-6)
    assert np.allclose(res["sensitivity"], expected.sensitivity)
    assert not np.allclose(res["probability"], default["probability"], atol=1e-3)
    assert np.array_equal(res["labels"], matching.label_objects(expected.probability > 0.5))
    h, w = image.shape
    ignore = np.zeros((h, w), bool)
    ignore[:, : w // 2] = True
    for method in ("staple", "majority", "objects"):
        _, ign = fiji.consensus(imp, method=method, ignore=ignore, return_result=True)
        assert np.array_equal(ign["labels"], cons.consensus_of(masks, method, ignore=ignore)["labels"]), method
        assert ign["labels"][ignore].max() == 0 and ign["labels"].max() > 0, method
    # ignore regions given as ROIs are filled by ImageJ: the same as the mask
    left = roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, top=0, left=0, bottom=h, right=w // 2)
    _, by_roi = fiji.consensus(imp, method="majority", ignore=[left], return_result=True)
    assert np.array_equal(by_roi["labels"], cons.consensus_of(masks, "majority", ignore=ignore)["labels"])
    with pytest.raises(ValueError, match="ignore must be a mask of the image's shape"):
        fiji.consensus(imp, ignore=np.zeros((3, 3), bool))


@pytest.mark.imagej
def test_predict_subtracts_the_background_for_the_model_only(ij, sample_crop):
    """``subtract_background=R``: the model sees ImageJ's Subtract Background of the plane; the image stays."""
    from fiji_consensus.background import subtract_background

    _, image, _ = sample_crop
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    bright = (image + 0.3 * xx).astype(np.float32)
    imp = fiji.to_imageplus(bright)
    seen = []

    def model(img):
        seen.append(img)
        return np.clip(img / 255.0, 0, 1)[None]

    fiji.predict(imp, model, subtract_background=20, threshold=0.3)
    assert np.allclose(seen[0], subtract_background(bright, 20), atol=1e-5)
    assert np.array_equal(fiji.from_imageplus(imp), bright)
    with pytest.raises(ValueError, match="rolling ball radius must be a positive number"):
        fiji.predict(imp, model, subtract_background=0)


@pytest.mark.imagej
def test_predict_with_a_callable_ensemble(ij, sample_crop):
    """Objects named and coloured as `fiji-consensus predict` writes them, on the measure's absolute scale."""
    from fiji_consensus import instances, uncertainty
    from fiji_consensus.style import uncertainty_color

    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image)
    x = image.astype(np.float32) / 255.0

    def ensemble(img):
        base = img / 255.0
        return np.stack([base, np.clip(base * 1.5, 0, 1), np.sqrt(base)])

    members = np.stack([x, np.clip(x * 1.5, 0, 1), np.sqrt(x)])
    stats = uncertainty.ensemble_statistics(members)
    colours = {}
    for measure in ("entropy", "std"):
        out, res = fiji.predict(imp, ensemble, threshold=0.3, min_size=20, measure=measure, return_result=True)
        assert out is imp and res["measure"] == measure
        assert np.allclose(res["probability"], stats["mean"], atol=1e-6)
        assert np.allclose(res["uncertainty"], stats[measure], atol=1e-6)
        expected = instances.label_instances(stats["mean"], threshold=0.3, min_size=20)
        assert np.array_equal(res["labels"], expected) and expected.max() > 3
        pulled = fiji.pull_rois(imp)
        assert len(pulled) == expected.max() == len(res["objects"])
        for r, row in zip(pulled, res["objects"]):
            u = row["mean_uncertainty"]
            assert r.name == f"prediction:{row['id']:04d}_u{u:.3f}"
            assert r.stroke_color == bytes.fromhex("FF" + uncertainty_color(u, measure)[1:])
            assert np.isclose(float(r.properties["uncertainty"]), u, atol=1e-4)
        # ImageJ fills each outline exactly as the object
        assert np.array_equal(fiji.rasterize(pulled, image.shape), expected)
        colours[measure] = {r.stroke_color for r in pulled}
    assert len(colours["entropy"]) > 2  # stroked by uncertainty, not one colour
    # an object threshold keeps only the objects whose peak probability passes it, outlines unchanged
    _, hres = fiji.predict(imp, ensemble, threshold=0.3, object_threshold=0.6, min_size=20, return_result=True)
    kept = [k for k in range(1, expected.max() + 1) if stats["mean"][expected == k].max() > 0.6]
    assert hres["object_threshold"] == 0.6 and 0 < len(kept) < expected.max()
    assert np.array_equal(hres["labels"] > 0, np.isin(expected, kept)) and len(fiji.pull_rois(imp)) == len(kept)
    with pytest.raises(ValueError, match="object_threshold must be >= the threshold"):
        fiji.predict(imp, ensemble, threshold=0.3, object_threshold=0.2)
    # a channel of a multi-channel image
    two = fiji.to_imageplus(np.stack([np.zeros_like(image), image]))
    with pytest.raises(ValueError, match="2 channels; choose one with channel="):
        fiji.predict(two, ensemble)
    _, res2 = fiji.predict(two, ensemble, channel=1, threshold=0.3, min_size=20, return_result=True)
    assert np.array_equal(res2["labels"], expected) and two.getOverlay().size() == expected.max()
    # added to a consensus overlay, the predictions are not taken for an expert
    fiji.push_consensus(imp, None, {e: masks[k] for k, e in enumerate(experts)})
    n_consensus = imp.getOverlay().size()
    fiji.predict(imp, ensemble, threshold=0.3, min_size=20, replace=False)
    # predicting again replaces the earlier prediction's objects, never doubles them (issue 16, bug 7)
    fiji.predict(imp, ensemble, threshold=0.3, min_size=20, replace=False)
    assert imp.getOverlay().size() == n_consensus + expected.max()
    _, cres = fiji.consensus(imp, return_result=True)
    assert cres["experts"] == experts
    with pytest.raises(ValueError, match="model must return"):
        fiji.predict(imp, lambda im: im[:10])
    with pytest.raises(TypeError, match="model must be"):
        fiji.predict(imp, 42)
    with pytest.raises(ValueError, match="measure must be one of"):
        fiji.predict(imp, ensemble, measure="variance")
    # probability and uncertainty as channels with the CLI's LUTs and absolute display ranges
    pimp = fiji.probability_image(res["probability"], res["uncertainty"], image=image, measure="std")
    assert pimp.getNChannels() == 3 and pimp.isComposite()
    assert np.allclose(fiji.from_imageplus(pimp), np.stack([image, res["probability"], res["uncertainty"]]))
    luts = pimp.getLuts()
    assert (luts[1].min, luts[1].max, luts[2].min, luts[2].max) == (0.0, 1.0, 0.0, 0.5)
    def rgb(lut, i):
        return tuple(int(b) & 0xFF for b in (lut.getBytes()[i], lut.getBytes()[256 + i], lut.getBytes()[512 + i]))

    assert [rgb(luts[2], 0), rgb(luts[2], 255)] == [(0, 255, 255), (255, 0, 0)]  # cyan certain .. red uncertain
    assert rgb(luts[1], 255) == (0, 255, 0) and rgb(luts[0], 255) == (255, 255, 255)


@pytest.mark.imagej
@pytest.mark.slow
def test_predict_takes_a_bioimageio_package_as_the_cli_does(ij, sample_crop):
    """Issue 16, bug 7: ``fiji.predict(imp, "model.zip")`` refused the zoo package that the CLI accepts."""
    pytest.importorskip("bioimageio.core")
    from fiji_consensus import zoo

    package = REPO / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip"
    experts, image, masks = sample_crop
    imp = fiji.to_imageplus(image[:128, :128])
    out, res = fiji.predict(imp, str(package), return_result=True)
    expected = zoo.predict_packages([zoo.load_package(package)], image[:128, :128])
    assert np.allclose(res["probability"], expected.probability, atol=1e-5)
    assert np.array_equal(res["labels"], expected.labels) and expected.labels.max() > 0
    assert out.getOverlay().size() == len(expected.objects)


@pytest.mark.imagej
def test_predict_takes_a_load_model_predictor(ij, sample_crop, tmp_path):
    """The one model interface reaches Fiji too: a ``load_model`` Predictor (here of the zoo package) gives
    what the Predictor itself gives, objects in the overlay."""
    pytest.importorskip("bioimageio.core")
    from fiji_consensus.models import load_model

    model = load_model(REPO / "model_zoo" / "cfos-wue1" / "cfos-wue1.zip")
    _, image, _ = sample_crop
    imp = fiji.to_imageplus(image[:128, :128])
    out, res = fiji.predict(imp, model, threshold=0.4, return_result=True)
    expected = model.predict(image[:128, :128], threshold=0.4)
    assert res["threshold"] == 0.4 and np.array_equal(res["labels"], expected.labels) and expected.labels.max() > 0
    assert np.allclose(res["probability"], expected.probability, atol=1e-6)
    assert out.getOverlay().size() == len(expected.objects)
    # a Keras file's path alone cannot run (its normalisation is unknown): the error says how to load it
    with pytest.raises(ValueError, match=r"m.keras'\]: a plain Keras model needs its normalisation; pass .*load_model"):
        fiji.predict(imp, str(tmp_path / "m.keras"))
