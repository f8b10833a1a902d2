"""Meta's own EdgeTAM code on random weights, run in a process of its own.

Meta's EdgeTAM repository installs a package named ``sam2``, as Meta's SAM 2 does (the SAM 2.1
reference of the other tests), so it runs here from its source folder, first on ``sys.path``:

    python tests/edgetam_reference.py SOURCE WORK

``WORK/plan.json`` says what to run; this writes ``WORK/edgetam.pt`` (a random model in the release
file's format: ``{"model": state_dict}``, built by Meta's ``edgetam.yaml``, every tensor perturbed, the
object-score head's bias raised by the plan's ``object_score_bias``),
then ``WORK/reference.pt``: the image predictor's masks for the plan's boxes on its image, and the
video predictor's mask logits per frame and object over its frame folder (one session per start frame).

timm's RepViT is built without its ImageNet weights (Meta's trunk asks for them; nothing is downloaded).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock


def main(source: Path, work: Path) -> None:
    sys.path.insert(0, str(source))
    import numpy as np
    import sam2
    import sam2.modeling.backbones.timm as trunk
    import timm.models
    import torch
    from PIL import Image
    from reference_models import perturb  # beside this file; it imports no sam2

    assert Path(sam2.__file__).resolve().is_relative_to(source.resolve()), f"imported {sam2.__file__}, not EdgeTAM's"
    from sam2.build_sam import build_sam2, build_sam2_video_predictor
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    plan = json.loads((work / "plan.json").read_text())
    create = timm.models.create_model
    offline = mock.patch.object(trunk, "create_model", lambda *a, **k: create(*a, **{**k, "pretrained": False}))
    checkpoint = work / "edgetam.pt"
    with offline:
        torch.manual_seed(plan["seed"])
        model = build_sam2("configs/edgetam.yaml", None, device="cpu").eval()
        perturb(model, plan["seed"], scale=0.02)
        with torch.no_grad():  # random weights call most objects absent, every video mask empty: present, by a margin
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(plan.get("object_score_bias", 0.0))
        torch.save({"model": model.state_dict()}, checkpoint)

        predictor = SAM2ImagePredictor(model)
        predictor.set_image(np.asarray(Image.open(plan["image"]).convert("RGB")))
        masks, _, _ = predictor.predict(box=np.asarray(plan["image_boxes"], dtype=np.float32), multimask_output=False)
        image_masks = torch.from_numpy(masks[:, 0] > 0)

        video = build_sam2_video_predictor("configs/edgetam.yaml", str(checkpoint), device="cpu")
    # no hole filling (Meta's skips it without its CUDA extension, PyPI's copy would fill with OpenCV): ours never fills
    video.fill_hole_area = 0
    # EdgeTAM's predictor (SAM 2's first release) takes no object once tracking has started: an object added on a
    # later frame is tracked in a session of its own from that frame (each object's memory is its own)
    logits: dict[int, dict[int, torch.Tensor]] = {}
    for session in plan["video_sessions"]:
        state = video.init_state(plan["frames"])
        for obj_id, box in session["boxes"].items():
            video.add_new_points_or_box(state, frame_idx=session["start"], obj_id=int(obj_id), box=np.asarray(box, dtype=np.float32))
        for index, ids, out in video.propagate_in_video(state, start_frame_idx=session["start"]):
            logits.setdefault(index, {}).update({obj: out[row, 0].clone() for row, obj in enumerate(ids)})
    torch.save({"image_masks": image_masks, "video_logits": logits}, work / "reference.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
