"""SAM 2 / 2.1's video memory beside its image model: transformers' ``Sam2VideoModel`` (as ``Sam2Tracker``).

The video model shares every image-path weight with the segmenter's ``Sam2Model`` (the same
``Parameter`` objects), so tracking costs only the memory modules' few megabytes more, and a host
that moves the segmenter moves both. A Meta release file gives the image model first and its
memory beside it; a transformers ``sam2_video`` folder (the hub's ``facebook/sam2.1-hiera-*``)
gives the video model, and the image model is read out of it. EdgeTAM (SAM 2's interface with a
lighter encoder and memory) is built the same way: its release file gives the video model whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    EdgeTamConfig,
    EdgeTamModel,
    EdgeTamVideoConfig,
    EdgeTamVideoModel,
    Sam2Config,
    Sam2Model,
    Sam2VideoConfig,
    Sam2VideoModel,
)

from ..model_files.checkpoints import load_exact, require_complete, without_initial_values
from .edgetam_tracker import EdgeTamTracker
from .sam2_tracker import Sam2Tracker


def build_video_model(image_model: Sam2Model, video_weights: dict[str, torch.Tensor], source: Path, name: str) -> Sam2VideoModel:
    """A ``Sam2VideoModel`` whose image path is ``image_model``'s own weights and whose memory is ``video_weights``.

    SAM 2 (before 2.1) has no occlusion embedding and no temporal encoding of object pointers;
    the config says so when its tensors are absent.
    """
    sam21 = "occlusion_spatial_embedding_parameter" in video_weights
    config = Sam2VideoConfig(
        vision_config=image_model.config.vision_config.to_dict(),
        prompt_encoder_config=image_model.config.prompt_encoder_config.to_dict(),
        mask_decoder_config=image_model.config.mask_decoder_config.to_dict(),
        enable_occlusion_spatial_embedding=sam21,
        enable_temporal_pos_encoding_for_object_pointers=sam21,
    )
    video = without_initial_values(lambda: Sam2Tracker(config)).eval()  # its memory encoded as Meta's
    wanted = video.state_dict()  # once: building it walks every module
    state = {k: v for k, v in {**image_model.state_dict(keep_vars=True), **video_weights}.items() if k in wanted}
    require_complete(video, state, source, f"{name} video")
    load_exact(video, state, source, f"{name} video", assign=True)
    return video.eval()


def build_edgetam_video_model(config: EdgeTamVideoConfig, weights: dict[str, torch.Tensor], source: Path, name: str) -> EdgeTamVideoModel:
    """EdgeTAM's video model from every tensor of its release file (its image model is read out of it)."""
    video = without_initial_values(lambda: EdgeTamTracker(config)).eval()
    require_complete(video, weights, source, f"{name} video")
    load_exact(video, weights, source, f"{name} video")
    return video.float().eval()


def image_model_of(video: Sam2VideoModel | EdgeTamVideoModel, source: Path, name: str) -> Sam2Model | EdgeTamModel:
    """The image model inside ``video`` (``Sam2Model``, or ``EdgeTamModel`` for EdgeTAM): its image path, the same
    ``Parameter`` objects (nothing copied)."""
    config_class, model_class = (EdgeTamConfig, EdgeTamModel) if isinstance(video, EdgeTamVideoModel) else (Sam2Config, Sam2Model)
    config = config_class(
        vision_config=video.config.vision_config.to_dict(),
        prompt_encoder_config=video.config.prompt_encoder_config.to_dict(),
        mask_decoder_config=video.config.mask_decoder_config.to_dict(),
    )
    image = without_initial_values(lambda: model_class(config)).eval()
    wanted = image.state_dict()
    state = {k: v for k, v in video.state_dict(keep_vars=True).items() if k in wanted}
    require_complete(image, state, source, f"{name} image")
    load_exact(image, state, source, f"{name} image", assign=True)
    return image.eval()
