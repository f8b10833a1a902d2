"""Models are built without random initial values before their weights are loaded: nothing else may differ."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    Sam2Config,
    Sam2Model,
    SamConfig,
    SamModel,
    SwinConfig,
)

from grounded_sam.model_files.checkpoints import without_initial_values


def small_grounding_dino() -> GroundingDinoForObjectDetection:
    swin = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], out_features=["stage2", "stage3", "stage4"])
    bert = BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128)
    config = GroundingDinoConfig(backbone_config=swin.to_dict(), text_config=bert.to_dict(), d_model=64, encoder_layers=1, decoder_layers=2,
                                 encoder_ffn_dim=128, decoder_ffn_dim=128, num_queries=20)  # fmt: skip
    return GroundingDinoForObjectDetection(config)


def small_sam() -> SamModel:
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1], "mlp_dim": 64}
    return SamModel(SamConfig(vision_config=vision))


def small_sam2() -> Sam2Model:
    return Sam2Model(Sam2Config())


@pytest.mark.parametrize("build", [small_grounding_dino, small_sam, small_sam2])
def test_built_without_initial_values_the_model_is_the_same_once_loaded(build):
    torch.manual_seed(0)
    normal = build().eval()
    bare = without_initial_values(build).eval()
    persistent = set(normal.state_dict())
    computed = {name: buffer for name, buffer in normal.named_buffers() if name not in persistent}
    bare_buffers = dict(bare.named_buffers())
    for name, buffer in computed.items():  # made by the constructors, never loaded: they must be there already
        assert torch.equal(bare_buffers[name], buffer), name
    # tied weights are one tensor in both
    for tied, source in getattr(normal, "all_tied_weights_keys", {}).items():
        assert bare.get_parameter(tied) is bare.get_parameter(source), tied
    bare.load_state_dict(normal.state_dict(), strict=True)
    for (name, a), (_, b) in zip(normal.state_dict().items(), bare.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    if build is small_grounding_dino:
        assert computed, "Swin computes its index tables: the buffer check must have compared some"


def test_one_recogniser_names_every_family(dino_checkpoint, sam_checkpoint, sam2_tiny, mm_folder, tmp_path):
    """Both loaders ask ``recognise``; it tells each release file and folder's family from its tensors or its config."""
    import json

    from grounded_sam.recognise import GROUNDING_DINO, SAM, SAM2, UNKNOWN, recognise

    assert recognise(dino_checkpoint).family == GROUNDING_DINO
    assert recognise(sam_checkpoint).family == SAM
    assert recognise(sam2_tiny[1]).family == SAM2
    folder = recognise(mm_folder)
    assert folder.family == GROUNDING_DINO and folder.is_folder and folder.model_type == "mm-grounding-dino"
    torch.save({"some.weight": torch.zeros(2)}, tmp_path / "other.pth")
    assert recognise(tmp_path / "other.pth").family == UNKNOWN
    (tmp_path / "bare").mkdir()
    assert recognise(tmp_path / "bare").model_type is None
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert recognise(tmp_path / "vit").family == UNKNOWN


def test_model_families_do_not_ask_each_other():
    """dino/, sam/ and sam3/ never import one another, save one arrow: SAM 3 builds on SAM 2 (its tracker and box head
    are SAM 2's, its key names too), so sam3/ may import sam/, never the reverse. Which family a file is, is decided
    above them (recognise, loaders)."""
    from test_layers import (  # the layer test's import reader: relative, absolute and lazy imports
        PACKAGE,
        imported_entries,
    )

    families = ("dino", "sam", "sam3")
    allowed = {"sam3": {"sam"}}
    for family in families:
        foreign = {f for f in families if f != family} - allowed.get(family, set())
        sources = list((PACKAGE / family).glob("*.py"))
        assert sources, family
        for source in sources:
            assert not imported_entries(source) & foreign, f"{family}/{source.name} imports {imported_entries(source) & foreign}"
