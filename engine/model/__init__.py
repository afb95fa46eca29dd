"""Our SAM: the model (official-checkpoint compatible), presets, checkpoints and predictor.

Module structure, parameter names and call signatures follow the official
``segment-anything`` package, so official checkpoints load and code written against the
official classes runs unchanged.
"""

from engine.model.build import build_sam
from engine.model.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from engine.model.image_encoder import ImageEncoderViT
from engine.model.mask_decoder import MaskDecoder
from engine.model.predictor import ImageEmbedding, SamPredictor
from engine.model.presets import PRESETS, matching_presets, preset_from_model, preset_name
from engine.model.prompt_encoder import PromptEncoder
from engine.model.sam import Sam
from engine.model.transformer import TwoWayTransformer
from engine.model.transforms import ResizeLongestSide

__all__ = [
    "PRESETS",
    "ImageEmbedding",
    "ImageEncoderViT",
    "MaskDecoder",
    "PromptEncoder",
    "ResizeLongestSide",
    "Sam",
    "SamPredictor",
    "TwoWayTransformer",
    "build_sam",
    "load_checkpoint",
    "matching_presets",
    "preset_from_model",
    "preset_name",
    "read_state_dict",
    "save_checkpoint",
]
