"""``grounded-sam label``/``merge``/``eval`` and ``label_dataset``: COCO and YOLO files, resume, shards, AP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from scenes import PROMPT, top_score

from grounded_sam import DetectionSettings, GroundedSam, evaluate, label_dataset
from grounded_sam.cli import main
from grounded_sam.labeling.annotations import decode_mask
from grounded_sam.labeling.sources import list_images, take_shard
from grounded_sam.media.images import load_image_file

CATEGORIES = ["person", "tie"]


def rle_mask(segmentation: dict) -> np.ndarray:
    return decode_mask(segmentation)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_same_labels(ours: dict, theirs: dict) -> None:
    """Two coco.json files hold the same images and objects (masks IoU >= 0.999, boxes within 1e-3)."""
    assert ours["categories"] == theirs["categories"]
    assert [(i["file_name"], i["width"], i["height"]) for i in ours["images"]] == [
        (i["file_name"], i["width"], i["height"]) for i in theirs["images"]
    ]  # ids may differ: they are places in each job's own list
    our_name = {i["id"]: i["file_name"] for i in ours["images"]}
    their_name = {i["id"]: i["file_name"] for i in theirs["images"]}
    assert len(ours["annotations"]) == len(theirs["annotations"])
    for a, b in zip(ours["annotations"], theirs["annotations"], strict=True):
        assert (our_name[a["image_id"]], a["category_id"], a["label"]) == (their_name[b["image_id"]], b["category_id"], b["label"])
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-3) and abs(a["score"] - b["score"]) < 1e-4
        assert iou(rle_mask(a["segmentation"]), rle_mask(b["segmentation"])) >= 0.999


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, bus, zidane):
    """Four good photos (one in a subfolder) and three bad files, the way a real folder looks."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "sub").mkdir()
    Image.fromarray(bus.numpy()).save(root / "bus.jpg", quality=95)
    Image.fromarray(zidane.numpy()).save(root / "zidane.png")
    Image.fromarray(bus[200:840, 100:740].numpy()).save(root / "sub" / "crop.png")
    Image.fromarray(zidane[:, 300:1000].numpy()).save(root / "sub" / "zidane-right.jpg", quality=95)
    whole = (root / "zidane.png").read_bytes()
    (root / "truncated.png").write_bytes(whole[: len(whole) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image")
    return root


GOOD = ["bus.jpg", "sub/crop.png", "sub/zidane-right.jpg", "zidane.png"]
BAD = ["empty.jpg", "notes.jpg", "truncated.png"]


@pytest.fixture(scope="module")
def threshold(detector, bus, zidane) -> float:
    """A box threshold under which every good photo has a few objects, whatever the random weights find."""
    return min(top_score(detector, bus), top_score(detector, zidane[:, 300:1000]), top_score(detector, bus[200:840, 100:740])) - 0.02


def label_args(sources, out, dino, sam, threshold, *extra) -> list[str]:
    return ["label", *map(str, sources), "--prompt", PROMPT, "--out", str(out), "--dino", str(dino), "--sam", str(sam),
            "--box-threshold", f"{threshold:.6f}", "--no-progress", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, dataset, dino_checkpoint, sam_checkpoint, threshold):
    out = tmp_path_factory.mktemp("single") / "job"
    code = main(label_args([dataset], out, dino_checkpoint, sam_checkpoint, threshold, "--yolo"))
    return code, out


def test_sources_folder_glob_list_and_shards(tmp_path, dataset):
    folder = [i.file_name for i in list_images([dataset])]
    assert folder == sorted(GOOD + BAD)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my subset\n{dataset / 'zidane.png'}\n\n{os.path.relpath(dataset / 'bus.jpg', tmp_path)}\n")
    items = list_images([str(dataset / "sub" / "*.jpg"), listing, dataset / "zidane.png"])  # the repeat is taken once
    assert [Path(i.path).name for i in items] == ["zidane-right.jpg", "zidane.png", "bus.jpg"]
    assert [i.id for i in items] == [1, 2, 3] and items[0].file_name == "sub/zidane-right.jpg"
    shards = [take_shard(folder, i, 3) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(folder) and max(map(len, shards)) - min(map(len, shards)) <= 1
    assert main(["label", str(tmp_path / "nothing" / "*.png"), "--prompt", "a", "--out", str(tmp_path / "o"),
                 "--dino", "x.pth", "--sam", "y.pth"]) == 2  # fmt: skip


def test_label_writes_coco_and_yolo_equal_to_the_library(single_run, dataset, detector, segmenter, threshold, capsys):
    code, out = single_run
    assert code == 1  # three bad files failed, the good ones are labelled
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["file_name"] for e in errors) == BAD
    messages = {e["file_name"]: e["error"] for e in errors}
    assert "empty" in messages["empty.jpg"] or "cannot read" in messages["empty.jpg"]
    assert "cannot read image" in messages["truncated.png"] and "cannot read image" in messages["notes.jpg"]
    coco = COCO(str(out / "coco.json"))  # pycocotools reads it
    data = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in data["categories"]] == CATEGORIES
    assert [i["file_name"] for i in data["images"]] == GOOD  # in the job's order; failed images are not labelled
    pipeline = GroundedSam(detector, segmenter)
    total = 0
    for image in data["images"]:
        frame = load_image_file(dataset / image["file_name"])
        expected = pipeline.segment(frame, PROMPT, DetectionSettings(threshold, 0.25))
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert len(annotations) == len(expected) >= 1
        assert (image["height"], image["width"]) == tuple(frame.shape[1:3])
        for k, annotation in enumerate(annotations):
            assert np.array_equal(coco.annToMask(annotation).astype(bool), expected.masks[k].numpy())
            x0, y0, x1, y1 = expected.boxes[k].tolist()
            assert np.allclose(annotation["bbox"], [x0, y0, x1 - x0, y1 - y0], atol=1e-3)
            assert annotation["category_id"] == int(expected.phrase_index[k]) + 1 and annotation["label"] == expected.labels[k]
            assert abs(annotation["score"] - float(expected.scores[k])) < 1e-6
            assert annotation["area"] == int(expected.masks[k].sum())
        total += len(annotations)
    assert [a["id"] for a in data["annotations"]] == list(range(1, total + 1))
    # YOLO: a label file per labelled image, class ids from the prompt, polygon points on the object
    yolo = out / "yolo"
    assert '0: "person"' in (yolo / "data.yaml").read_text() and '1: "tie"' in (yolo / "data.yaml").read_text()
    assert (yolo / "images" / "sub" / "crop.png").resolve() == (dataset / "sub" / "crop.png").resolve()
    for image in data["images"]:
        lines = (yolo / "labels" / Path(image["file_name"]).with_suffix(".txt")).read_text().splitlines()
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert 0 < len(lines) <= len(annotations)
        for line in lines:
            cls, *coords = line.split()
            points = np.array(coords, dtype=float).reshape(-1, 2)
            assert int(cls) in (0, 1) and len(points) >= 3 and (points >= 0).all() and (points <= 1).all()
            pixels = np.rint(points * [image["width"], image["height"]]).astype(int)
            owners = [a for a in annotations if a["category_id"] == int(cls) + 1]
            on_some_mask = [coco.annToMask(a)[pixels[:, 1].clip(0, image["height"] - 1), pixels[:, 0].clip(0, image["width"] - 1)].all()
                            for a in owners]  # fmt: skip
            assert any(on_some_mask)  # every vertex is a pixel of one object of that class


def test_rerun_skips_what_is_done_and_refuses_another_job(single_run, dataset, dino_checkpoint, sam_checkpoint, threshold, capsys):
    code, out = single_run
    before = (out / "results.jsonl").read_text()
    capsys.readouterr()
    assert main(label_args([dataset], out, dino_checkpoint, sam_checkpoint, threshold, "--yolo")) == 1  # the bad ones are retried
    err = capsys.readouterr().err
    assert "7 image(s): 0 labelled, 4 already done (skipped), 3 failed" in err
    assert (out / "results.jsonl").read_text() == before
    assert main(label_args([dataset], out, dino_checkpoint, sam_checkpoint, threshold + 0.01)) == 2
    err = capsys.readouterr().err
    assert "holds a labelling run with other models, prompt or settings" in err and "box_threshold" in err


@pytest.mark.system
def test_killed_run_loses_at_most_the_image_in_flight(tmp_path, single_run, dataset, dino_checkpoint, sam_checkpoint, threshold, capsys):
    out = tmp_path / "job"
    images = [dataset / name for name in GOOD]
    command = [sys.executable, "-m", "grounded_sam.cli", *label_args(images, out, dino_checkpoint, sam_checkpoint, threshold, "--yolo")]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    kept = results.read_text().count("\n")
    assert 1 <= kept < len(GOOD), run.stderr.read().decode()[-2000:]
    with open(results, "a") as f:
        f.write('{"id": 4, "file_name": "zidane.png", "annotations": [{"seg')  # a line cut short by the kill
    capsys.readouterr()
    assert main(label_args(images, out, dino_checkpoint, sam_checkpoint, threshold, "--yolo")) == 0
    assert f"{len(GOOD)} image(s): {len(GOOD) - kept} labelled, {kept} already done (skipped), 0 failed" in capsys.readouterr().err
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(line["file_name"] for line in lines) == GOOD  # each image once, the torn line gone
    assert_same_labels(json.loads((out / "coco.json").read_text()), json.loads((single_run[1] / "coco.json").read_text()))


def test_shards_merge_into_the_single_run(tmp_path, single_run, dataset, dino_checkpoint, sam_checkpoint, threshold, capsys):
    settings = DetectionSettings(threshold, 0.25)
    for i in range(3):
        summary = label_dataset(dataset, PROMPT, tmp_path / f"shard{i}", dino_checkpoint, sam_checkpoint, settings=settings, shard=f"{i}/3")
        assert summary.total in (2, 3) and summary.done + summary.failed == summary.total
    assert main(["merge", str(tmp_path / "shard0"), str(tmp_path / "shard2"), "--out", str(tmp_path / "partial")]) == 1
    assert "shards not given: 1/3" in capsys.readouterr().err
    assert main(["merge", *(str(tmp_path / f"shard{i}") for i in (2, 0, 1)), "--out", str(tmp_path / "merged"), "--yolo"]) == 0
    merged = json.loads((tmp_path / "merged" / "coco.json").read_text())
    assert_same_labels(merged, json.loads((single_run[1] / "coco.json").read_text()))
    assert sorted(json.loads(line)["file_name"] for line in (tmp_path / "merged" / "errors.jsonl").read_text().splitlines()) == BAD
    assert len(list((tmp_path / "merged" / "yolo" / "labels").rglob("*.txt"))) == len(GOOD)
    other = label_dataset(dataset / "bus.jpg", "person", tmp_path / "other", dino_checkpoint, sam_checkpoint, settings=settings, shard="1/3")
    assert other.total == 0
    assert main(["merge", str(tmp_path / "shard0"), str(tmp_path / "other"), "--out", str(tmp_path / "mixed")]) == 2
    assert "is a shard of another job" in capsys.readouterr().err


def _perturbed(data: dict, fraction: float, drop: bool = False) -> dict:
    """The same labels with ``fraction`` of each category's objects (at least that share, spread evenly; AP is a mean
    over categories) moved right out of the frame: a miss and a false positive each (neither the moved box nor its
    mask, now empty, can overlap any object), or dropped."""
    from grounded_sam.labeling.annotations import encode_masks

    copy = json.loads(json.dumps(data))
    widths = {image["id"]: image["width"] for image in copy["images"]}
    per_category = Counter(a["category_id"] for a in copy["annotations"])
    seen: Counter = Counter()
    kept = []
    for annotation in copy["annotations"]:
        n, count = seen[annotation["category_id"]], per_category[annotation["category_id"]]
        seen[annotation["category_id"]] += 1
        chosen = math.ceil(fraction * count)
        if (n + 1) * chosen // count > n * chosen // count:  # evenly spread: ``chosen`` of the category's ``count``
            if drop:
                continue
            mask = np.zeros_like(rle_mask(annotation["segmentation"]))  # all of it moved out of the frame
            annotation["segmentation"] = encode_masks(mask[None])[0]
            annotation["bbox"][0] += widths[annotation["image_id"]]
        kept.append(annotation)
    copy["annotations"] = kept
    return copy


def test_eval_gives_ap_one_on_its_own_labels_and_less_when_perturbed(tmp_path, single_run, capsys):
    predictions = single_run[1] / "coco.json"
    data = json.loads(predictions.read_text())
    truth = {**data, "annotations": [{k: v for k, v in a.items() if k != "score"} for a in data["annotations"]]}
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(truth))
    report = evaluate(predictions, gt)
    assert report["segm"]["AP"] == pytest.approx(1.0) and report["bbox"]["AP"] == pytest.approx(1.0) and report["missing"] == []
    fractions = (0.1, 0.3, 0.6)
    aps = {}
    for fraction in fractions:
        path = tmp_path / f"moved{fraction}.json"
        path.write_text(json.dumps(_perturbed(data, fraction)))
        aps[fraction] = evaluate(path, gt)
    for kind in ("segm", "bbox"):
        series = [aps[f][kind]["AP"] for f in fractions]
        assert 1.0 > series[0] > series[1] > series[2] > 0, (kind, series)
        # a moved object is missed, so AP cannot pass the recall left
        assert all(ap <= 1 - f + 0.02 for ap, f in zip(series, fractions, strict=True)), (kind, series)
    dropped = tmp_path / "dropped.json"
    dropped.write_text(json.dumps(_perturbed(data, 0.5, drop=True)))
    recall = evaluate(dropped, gt)["segm"]["AR100"]
    assert 0.4 < recall < 0.6
    # through the command line, with the run's folder; a ground truth with an image the run lacks counts it as missed
    truth["images"].append({"id": 999, "file_name": "elsewhere.jpg", "width": 10, "height": 10})
    truth["annotations"].append({"id": 99999, "image_id": 999, "category_id": 1, "iscrowd": 0, "area": 25, "bbox": [0, 0, 5, 5],
                                 "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]})  # fmt: skip
    gt.write_text(json.dumps(truth))
    capsys.readouterr()
    assert main(["eval", str(single_run[1]), "--gt", str(gt), "--json", str(tmp_path / "ap.json")]) == 0
    captured = capsys.readouterr()
    assert "mask AP" in captured.out and "box AP" in captured.out and "elsewhere.jpg" in captured.err
    figures = json.loads((tmp_path / "ap.json").read_text())
    assert figures["segm"]["AP"] < 1.0 and figures["missing"] == ["elsewhere.jpg"]  # the missed object counts
    assert main(["eval", str(tmp_path / "nope.json"), "--gt", str(gt)]) == 2


@pytest.mark.system
def test_ray_cluster_gives_the_single_process_labels(tmp_path, single_run, dataset, dino_checkpoint, sam_checkpoint, threshold, capsys):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 200 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)  # a second node: head and worker on this machine
    try:
        cluster.wait_for_nodes()
        code = main(label_args([dataset], tmp_path / "ray", dino_checkpoint, sam_checkpoint, threshold, "--yolo", "--ray", cluster.address))
        err = capsys.readouterr().err
        assert code == 1, err[-3000:]
        assert "7 image(s): 4 labelled, 0 already done (skipped), 3 failed" in err
        from ray._private.state import actors  # the GCS's actor table (the public state API needs the dashboard)

        labellers = [a for a in actors().values() if "_RayLabeler" in a["ActorClassName"]]
        print([(a["ActorClassName"], a["Address"]["NodeID"], a["State"]) for a in labellers])
        assert len(labellers) == 2 and len({a["Address"]["NodeID"] for a in labellers}) == 2  # a model actor on each node
    finally:
        ray.shutdown()
        cluster.shutdown()
    ours = json.loads((tmp_path / "ray" / "coco.json").read_text())
    assert_same_labels(ours, json.loads((single_run[1] / "coco.json").read_text()))
    failed = sorted(json.loads(line)["file_name"] for line in (tmp_path / "ray" / "errors.jsonl").read_text().splitlines())
    assert failed == BAD
    for name in GOOD:
        a = (tmp_path / "ray" / "yolo" / "labels" / Path(name).with_suffix(".txt")).read_text().splitlines()
        b = (single_run[1] / "yolo" / "labels" / Path(name).with_suffix(".txt")).read_text().splitlines()
        assert len(a) == len(b) and [line.split()[0] for line in a] == [line.split()[0] for line in b]


def test_api_example_in_the_labeling_page_runs(tmp_path, dataset, dino_checkpoint, sam_checkpoint, threshold):
    readme = (Path(__file__).resolve().parents[1] / "docs" / "labeling.md").read_text()
    example = readme.split("<!-- label-example -->")[1].split("```python")[1].split("```")[0]
    example = example.replace('"photos/"', repr(str(dataset))).replace('"labels/"', repr(str(tmp_path / "labels")))
    example = example.replace('"groundingdino_swint_ogc.pth"', repr(str(dino_checkpoint))).replace('"sam_vit_b_01ec64.pth"', repr(str(sam_checkpoint)))
    example = example.replace("box_threshold=0.3", f"box_threshold={threshold}")
    namespace: dict = {}
    exec(compile(example, "docs/labeling.md example", "exec"), namespace)  # noqa: S102 - the page's own example
    assert (tmp_path / "labels" / "coco.json").is_file() and (tmp_path / "labels" / "yolo" / "data.yaml").is_file()
    assert namespace["summary"].done == len(GOOD) and namespace["summary"].failed == len(BAD)
