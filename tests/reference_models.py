"""Reference implementations with random weights, saved in the formats users really have.

Every parameter gets noise, so zero-initialised ones (pos_embed, rel_pos, attention biases,
gammas) are exercised too: a wrong mapping of any tensor changes the outputs.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from functools import partial
from pathlib import Path
from unittest import mock

import torch
from transformers import BertConfig, BertModel, BertTokenizer
from transformers.models.bert.modeling_bert import BertEmbeddings

from grounded_sam.dino.text import PACKAGED_VOCAB


def perturb(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=generator) + 0.5)


# --- Segment Anything ------------------------------------------------------------------


def meta_sam(kind: str = "vit", hq: bool = False, embed: int = 64, depth: int = 2, heads: int = 2, seed: int = 0):
    """Meta's (or HQ-SAM's / MobileSAM's) own model classes, small ViT unless ``kind='tiny_vit'``."""
    if kind == "tiny_vit":
        from mobile_sam import sam_model_registry

        torch.manual_seed(seed)
        model = sam_model_registry["vit_t"]()
    else:
        torch.manual_seed(seed)  # the initial weights too: the same model whatever ran before
        package = __import__("segment_anything_hq" if hq else "segment_anything", fromlist=["modeling"])
        m = package.modeling
        encoder = m.ImageEncoderViT(
            depth=depth,
            embed_dim=embed,
            img_size=1024,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[depth - 1],
            window_size=14,
            out_chans=256,
        )
        decoder_cls = m.MaskDecoderHQ if hq else m.MaskDecoder
        decoder_kwargs = {"vit_dim": embed} if hq else {}
        model = m.Sam(
            image_encoder=encoder,
            prompt_encoder=m.PromptEncoder(
                embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
            ),
            mask_decoder=decoder_cls(
                num_multimask_outputs=3,
                transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                transformer_dim=256,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
                **decoder_kwargs,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    perturb(model, seed)
    return model.eval()


def meta_predictor(model, kind: str = "vit", hq: bool = False):
    if kind == "tiny_vit":
        from mobile_sam import SamPredictor
    elif hq:
        from segment_anything_hq import SamPredictor
    else:
        from segment_anything import SamPredictor
    return SamPredictor(model)


# --- Grounding DINO ----------------------------------------------------------------------


def restore_bert_helpers() -> None:
    """The original BertModelWarper calls BertModel helpers and arguments that transformers 5 removed."""

    def get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=torch.float32):
        ext = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
        return (1.0 - ext.to(dtype)) * torch.finfo(dtype).min

    def invert_attention_mask(self, encoder_attention_mask):
        raise NotImplementedError("the detector never runs BERT as a decoder")

    def get_head_mask(self, head_mask, num_hidden_layers, is_attention_chunked=False):
        return [None] * num_hidden_layers

    BertModel.get_extended_attention_mask = get_extended_attention_mask
    BertModel.invert_attention_mask = invert_attention_mask
    BertModel.get_head_mask = get_head_mask
    accept_past_key_values_length(BertEmbeddings)


def accept_past_key_values_length(embeddings: type) -> None:
    """transformers 5.24 renamed BertEmbeddings' ``past_key_values_length`` to ``cache_length``."""
    forward = embeddings.forward
    if "cache_length" not in inspect.signature(forward).parameters or getattr(forward, "renames_past_length", False):
        return

    def renamed(self, *args, past_key_values_length: int = 0, **kwargs):
        kwargs.setdefault("cache_length", past_key_values_length)
        return forward(self, *args, **kwargs)

    renamed.renames_past_length = True
    embeddings.forward = renamed


def bert_folder(folder: Path, hidden: int = 128, layers: int = 2, intermediate: int | None = None, seed: int = 0) -> Path:
    """A random BERT (small by default) where the original code looks for ``bert-base-uncased``."""
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), intermediate_size=intermediate or 2 * hidden
    )
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=str(PACKAGED_VOCAB)).save_pretrained(folder)
    return folder


def original_grounding_dino(
    bert: Path,
    backbone: str = "swin_T_224_1k",
    enc: int = 2,
    dec: int = 2,
    seed: int = 0,
    swin: dict | None = None,
    hidden: int = 256,
    ffn: int = 2048,
    decoder_norm: tuple[float, float] = (0.05, 1.0),
):
    """The original IDEA model (as packaged on PyPI) with random weights.

    ``swin`` overrides the named backbone's settings (``depths``, ``embed_dim``, ``num_heads``): a
    reduced Swin with the same tensor names; ``hidden`` and ``ffn`` are the transformer's widths.
    ``decoder_norm`` scales the decoder's last norm (weight, bias), which sets how far the token
    logits spread: random weights would otherwise saturate every score.
    """
    restore_bert_helpers()
    from addict import Dict
    from groundingdino.models import build_model
    from groundingdino.models.GroundingDINO.backbone import backbone as backbones

    args = Dict(
        modelname="groundingdino", backbone=backbone, position_embedding="sine", pe_temperatureH=20,
        pe_temperatureW=20, return_interm_indices=[1, 2, 3], backbone_freeze_keywords=None, enc_layers=enc,
        dec_layers=dec, pre_norm=False, dim_feedforward=ffn, hidden_dim=hidden, dropout=0.0, nheads=8,
        num_queries=900, query_dim=4, num_patterns=0, num_feature_levels=4, enc_n_points=4, dec_n_points=4,
        two_stage_type="standard", two_stage_bbox_embed_share=False, two_stage_class_embed_share=False,
        transformer_activation="relu", dec_pred_bbox_embed_share=True, dn_box_noise_scale=1.0,
        dn_label_noise_ratio=0.5, dn_label_coef=1.0, dn_bbox_coef=1.0, embed_init_tgt=True,
        dn_labelbook_size=2000, max_text_len=256, text_encoder_type=str(bert), use_text_enhancer=True,
        use_fusion_layer=True, use_checkpoint=False, use_transformer_ckpt=False, use_text_cross_attention=True,
        text_dropout=0.0, fusion_dropout=0.0, fusion_droppath=0.1, sub_sentence_present=True, device="cpu",
    )  # fmt: skip
    build_swin = backbones.build_swin_transformer
    torch.manual_seed(seed)  # the initial weights too: the same model whatever ran before
    with mock.patch.object(backbones, "build_swin_transformer", lambda *a, **kw: build_swin(*a, **{**kw, **(swin or {})})):
        model = build_model(args)
    perturb(model, seed, scale=0.02)
    with torch.no_grad():  # keep token logits O(1) so thresholds split boxes instead of all saturating
        model.transformer.decoder.norm.weight.mul_(decoder_norm[0])
        model.transformer.decoder.norm.bias.mul_(decoder_norm[1])
    return model.eval()


# A Grounding DINO small enough for tests of everything around the model (hosts, outputs, caching, progress):
# the release layout and code path, a twentieth of the work. Parity tests use the release widths.
TINY_DINO = {"swin": {"embed_dim": 32, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]}, "hidden": 64, "ffn": 128, "enc": 1, "dec": 2}
# The release's per-layer shapes (Swin-T, BERT-base width, 256-wide transformer) with fewer layers of each; its
# scores spread like a detector's (on bus.jpg, "person . bus": a dozen of 585 boxes above 0.7, the best at 0.74).
REDUCED_SWINT_DINO = {"swin": {"depths": [2, 2, 2, 2]}, "enc": 2, "dec": 2, "decoder_norm": (0.025, 0.1)}


def save_original_release(model: torch.nn.Module, path: Path) -> Path:
    """The layout of ``groundingdino_swint_ogc.pth``: weights under "model" with a "module." prefix."""
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}}, path)
    return path


def mm_grounding_dino_folder(folder: Path, seed: int = 0) -> Path:
    """A small random MM-Grounding-DINO in the transformers layout of ``openmmlab-community/mm_grounding_dino_*``:
    config, safetensors weights, and the processor (image processor and BERT tokenizer)."""
    from transformers import (
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        MMGroundingDinoConfig,
        MMGroundingDinoForObjectDetection,
        SwinConfig,
    )

    torch.manual_seed(seed)
    swin = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=7, out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)
    config = MMGroundingDinoConfig(backbone_config=swin, text_config=bert, encoder_layers=2, decoder_layers=2, num_queries=300,
                                   encoder_ffn_dim=512, decoder_ffn_dim=512)  # fmt: skip
    model = MMGroundingDinoForObjectDetection(config).eval()
    perturb(model, seed, scale=0.02)
    model.save_pretrained(folder)
    GroundingDinoProcessor(GroundingDinoImageProcessor(), BertTokenizer(vocab=str(PACKAGED_VOCAB))).save_pretrained(folder)
    return folder


# --- SAM 2 ------------------------------------------------------------------------------

SAM2_CONFIGS = {  # Meta's release configs shipped in the sam2 package, by our name for the size
    "2.1-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "2.1-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "2.1-base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "2.1-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "2-tiny": "configs/sam2/sam2_hiera_t.yaml",
    "2-base_plus": "configs/sam2/sam2_hiera_b+.yaml",
}


def meta_sam2(size: str = "2.1-tiny", seed: int = 0):
    """Meta's SAM 2 model (``build_sam2``, the release architecture) with random weights."""
    from sam2.build_sam import build_sam2

    torch.manual_seed(seed)
    model = build_sam2(SAM2_CONFIGS[size], None, device="cpu")
    perturb(model, seed, scale=0.02)
    return model.eval()


def save_sam2_release(model: torch.nn.Module, path: Path) -> Path:
    """As Meta ships ``sam2.1_hiera_*.pt``: ``{"model": state_dict}``."""
    torch.save({"model": model.state_dict()}, path)
    return path


def sam2_video_at_size(video, size: int):
    """The same ``Sam2VideoModel`` weights (shared, not copied) read at ``size`` pixels instead of 1024.

    No tensor depends on SAM 2's input size, only the config: Meta's side takes it as the hydra
    override ``++model.image_size``. Memory attention costs the square of the tokens, so a test at
    512 runs about 7x faster and checks the same maths (one full-size case stays).
    """
    from grounded_sam.model_files.checkpoints import without_initial_values

    config = copy.deepcopy(video.config)
    grid = size // 16  # the coarsest feature map: one token per 16 pixels
    config.image_size = size
    config.prompt_encoder_config.image_size = size
    config.vision_config.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]
    config.memory_attention_rope_feat_sizes = [grid, grid]
    other = without_initial_values(lambda: type(video)(config)).eval()  # the loader's class (Sam2Tracker)
    other.load_state_dict(video.state_dict(keep_vars=True), strict=True, assign=True)
    return other


@contextlib.contextmanager
def meta_sam3_on_cpu():
    """Meta's ``sam3`` 0.1.4 assumes CUDA in three places that do not change the maths; on a CPU-only machine:

    the sine position encodings precompute a cache on "cuda" (computed on demand instead), the
    decoder precomputes its box-bias coordinates on "cuda" (made on the CPU), and the box
    encoder pins memory (a no-op here).
    """
    from sam3.model import decoder
    from sam3.model.position_encoding import PositionEmbeddingSine

    position_init, coords = PositionEmbeddingSine.__init__, decoder.TransformerDecoder._get_coords

    def no_precompute(self, *args, **kwargs):
        position_init(self, *args, **{**kwargs, "precompute_resolution": None})

    with (
        mock.patch.object(PositionEmbeddingSine, "__init__", no_precompute),
        mock.patch.object(decoder.TransformerDecoder, "_get_coords", staticmethod(lambda h, w, device: coords(h, w, "cpu"))),
        mock.patch.object(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: self),
    ):
        yield


def meta_sam3(
    depth: int = 2,
    global_blocks: tuple[int, ...] = (1,),
    text_layers: int = 2,
    interactive: bool = False,
    seed: int = 0,
    memory_layers: int = 1,
    fusion_layers: int = 2,
):
    """Meta's SAM 3 image model (``build_sam3_image_model``) with random weights, fewer ViT, text, fusion-encoder
    and tracker memory-attention layers. The release has 6 fusion layers (each costs about 0.4 s per phrase and
    frame here) and 4 memory layers (each about a second per object and frame); two fusion layers still chain.

    Everything else is the release architecture. ``interactive`` adds the tracker (box-to-mask head and video memory).
    """
    import sam3.model_builder as builder
    from sam3.model import vitdet
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer

    from grounded_sam.sam3.text import PACKAGED_BPE

    vit = vitdet.ViT

    def reduced_vit(**kwargs):
        return vit(**{**kwargs, "depth": depth, "global_att_blocks": global_blocks})

    def reduced_text(bpe_path):
        return VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=bpe_path), d_model=256, width=1024, heads=16, layers=text_layers)

    with (
        meta_sam3_on_cpu(),
        mock.patch.object(builder, "ViT", reduced_vit),
        mock.patch.object(builder, "_create_text_encoder", reduced_text),
    ):
        torch.manual_seed(seed)
        model = builder.build_sam3_image_model(
            bpe_path=str(PACKAGED_BPE), device="cpu", load_from_HF=False, enable_inst_interactivity=interactive
        )
    # A few tensors are left uninitialised (torch.empty) for the checkpoint to fill; the causal text mask is -inf by design.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and not name.endswith("attn_mask") and not (torch.isfinite(tensor).all() and tensor.abs().max() < 1e3):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
    perturb(model, seed, scale=0.01)  # larger noise makes a 1024-wide ViT's activations explode
    # built with the release's 6 fusion and 4 memory layers (the same random draws), then cut to the first few
    keep_first_layers(model.transformer.encoder, fusion_layers)
    if interactive:
        keep_first_layers(model.inst_interactive_predictor.model.transformer.encoder, memory_layers)
    return model.eval()



def keep_first_layers(encoder: torch.nn.Module, count: int) -> None:
    """A Meta encoder (``layers``, ``num_layers``) cut to its first ``count`` layers."""
    encoder.layers = encoder.layers[:count]
    encoder.num_layers = count


def calibrate_sam3(model, frame: torch.Tensor, phrase: str = "person") -> None:
    """Random weights give every query a mask of the whole frame and the same score, which would prove nothing.

    Centre the per-pixel mask embedding on ``frame`` (masks then cover part of the frame) and
    widen the query scores' spread. Still random weights, the same for both implementations.
    """
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor

    seen = []
    head = model.segmentation_head.instance_seg_head
    hook = head.register_forward_hook(lambda _module, _args, out: seen.append(out))
    with meta_sam3_on_cpu():
        processor = Sam3Processor(model, device="cpu", confidence_threshold=0.0)
        processor.set_text_prompt(phrase, processor.set_image(Image.fromarray(frame.numpy())))
    hook.remove()
    with torch.no_grad():
        head.bias -= seen[0].mean(dim=(0, 2, 3))
        model.dot_prod_scoring.hs_proj.weight *= 20
        model.dot_prod_scoring.hs_proj.bias *= 20


def save_sam3_release(model: torch.nn.Module, path: Path) -> Path:
    """As Meta ships ``sam3.pt``: ``{"model": ...}`` with the image detector under ``detector.`` and the tracker under ``tracker.``."""
    tracker = "inst_interactive_predictor.model."
    state = {}
    for name, tensor in model.state_dict().items():
        state[f"tracker.{name[len(tracker):]}" if name.startswith(tracker) else f"detector.{name}"] = tensor
    torch.save({"model": state}, path)
    return path


# --- ViTMatte ---------------------------------------------------------------------------------


def vitmatte_folder(folder: Path) -> Path:
    """A small random ViTMatte in the layout of ``hustvl/vitmatte-small-composition-1k``: config, safetensors, processor."""
    from transformers import VitDetConfig, VitMatteConfig, VitMatteForImageMatting, VitMatteImageProcessor

    torch.manual_seed(0)
    backbone = VitDetConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, num_channels=4,
                            out_features=["stage2"], use_relative_position_embeddings=True, window_block_indices=[0],
                            residual_block_indices=[])  # fmt: skip
    model = VitMatteForImageMatting(VitMatteConfig(backbone_config=backbone, hidden_size=64, convstream_hidden_sizes=[16, 32, 64],
                                                   fusion_hidden_sizes=[64, 32, 16, 8])).eval()  # fmt: skip
    perturb(model, 0, scale=0.3)  # smaller noise leaves every alpha at 0.504: nothing to compare
    model.save_pretrained(folder)
    VitMatteImageProcessor().save_pretrained(folder)
    return folder


def save_edgetam_video_folder(folder: Path, seed: int = 5) -> Path:
    """A random EdgeTAM as the hub's ``edgetam_video`` folder (transformers' layout and config: RepViT-M1, the
    release's widths and depths), every weight perturbed and its object-score head's bias raised by 8, so the
    random model sees its objects (else most of its video masks are empty)."""
    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel, TimmWrapperConfig
    from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

    from grounded_sam.sam.edgetam_convert import BACKBONE

    torch.manual_seed(seed)
    vision = EdgeTamVisionConfig(backbone_config=TimmWrapperConfig(**BACKBONE)).to_dict()
    config = EdgeTamVideoConfig(vision_config=vision, enable_occlusion_spatial_embedding=False, enable_temporal_pos_encoding_for_object_pointers=False)
    model = EdgeTamVideoModel(config).eval()
    perturb(model, seed, scale=0.02)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.add_(8.0)
    model.save_pretrained(folder)
    return folder
