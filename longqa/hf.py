"""Hugging Face transformers support (the `longqa[hf]` extra): `import longqa.hf` registers the model type
"longqa-armt" with AutoConfig and AutoModel, so that a longqa model directory loads with transformers:

    import longqa.hf  # registers "longqa-armt" with AutoConfig and AutoModel
    from transformers import AutoModel
    from longqa.engine import Engine
    from longqa.input.text import encode_text, load_tokenizer

    model = AutoModel.from_pretrained("weights/longqa-armt-small")  # fp32, eval mode; an ARMTModel
    engine = Engine.from_model(model, load_tokenizer("weights/longqa-armt-small/tokenizer.json"))
    memory = engine.new_memory()
    engine.read_ids([memory], [[encode_text(engine.tokenizer, "Mary went to the kitchen. John went to the garden.")]])
    print(engine.answer([memory], ["Where is Mary?"]))  # [['kitchen']]

ARMTHFModel is an ARMTModel (a subclass), so the whole ARMT API is the model's own: new_memory, context_segment,
read_context, question_segment, answer, logits; it has no forward(), as ARMTModel has none (a context segment
and a question segment are different calls). Its parameters are ARMTModel's, under the same names, so
model.safetensors loads without renaming, and what its save_pretrained writes, ARMTModel.from_pretrained and
longqa.checkpoint.load_model_dir load (copy tokenizer.json beside it for the latter).

dtype: from_pretrained gives fp32 unless `dtype` (or `torch_dtype`) says otherwise, as ARMTModel.from_pretrained
and the CLI on CPU do, so that answers are the CLI's; transformers 5 would otherwise take the file's bf16
("auto"). Pass dtype=torch.bfloat16 (or "auto"; torch_dtype before transformers 4.56) for half the memory, e.g.
on a GPU as the engine does. Keep the model on one device (.to(device)): every layer reads a memory state that
new_memory puts beside the embedding, so a device_map that splits the layers over devices does not work.
save_pretrained writes the weights in the dtype they are in: bf16 files come from a bf16 model.

The tokenizer stays the project's: `tokenizers.Tokenizer` through longqa.input.text, which splits text into
sentences and encodes each as " " + sentence, as training did. transformers' PreTrainedTokenizerFast(
tokenizer_file=...) loads the same tokenizer.json, but encoding a whole text with it is not what the model
was trained on, and it knows nothing of [GEN] ending a question (question_ids).

The CLI and the engine never import this module, so that transformers (seconds to import) stays off their path.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import transformers
from packaging.version import Version
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from longqa.model import HF_CONFIG_KEYS, MODEL_TYPE, ARMTConfig, ARMTModel

if Version(transformers.__version__) < Version("4.49"):
    # Before 4.49 transformers renamed every weight with "beta" in its name (mem_heads.N.W_beta) to "bias" on load,
    # then initialised W_beta afresh: a model that loads with a warning and answers wrongly.
    raise ImportError(f"longqa.hf needs transformers>=4.49 (pip install 'longqa[hf]'), not {transformers.__version__}")

ARMT_FIELDS = frozenset(ARMTConfig.field_names())
# transformers 5 loads in the checkpoint's dtype by default ("auto"); 4.x in fp32.
_DEFAULT_DTYPE_AUTO = Version(transformers.__version__).major >= 5


class ARMTHFConfig(PretrainedConfig):
    """ARMTConfig as a transformers config: the same fields under the same names, so that ARMTModel's code
    reads it as it reads an ARMTConfig. config.json holds every ARMTConfig field and, of what transformers
    adds, only HF_CONFIG_KEYS, so that ARMTConfig.from_pretrained reads what this writes."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any) -> None:
        # ARMTConfig fills the defaults and refuses another armt_version, as the native loader does.
        armt = ARMTConfig(**{k: kwargs.pop(k) for k in ARMT_FIELDS & kwargs.keys()})
        super().__init__(**kwargs)
        # After super().__init__: transformers 4.x sets pad_token_id / eos_token_id itself (to None when not given).
        for name, value in asdict(armt).items():
            setattr(self, name, value)

    @property
    def d_key(self) -> int:
        return ARMTConfig.d_key.fget(self)  # ARMTModel.new_memory reads it; the formula stays in model.py

    def to_armt(self) -> ARMTConfig:
        return ARMTConfig(**{name: getattr(self, name) for name in ARMT_FIELDS})

    @classmethod
    def from_armt(cls, config: ARMTConfig) -> ARMTHFConfig:
        return cls(**asdict(config))

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> ARMTHFConfig:
        # config.json's keys as ARMTConfig.from_dict judges them: one it does not know is a switch this code does
        # not implement, an error rather than an attribute that does nothing. Keys with "_" are transformers'
        # private bookkeeping (4.x adds _commit_hash here); kwargs are the caller's options.
        ARMTConfig.from_dict({k: v for k, v in config_dict.items() if not k.startswith("_")})
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        # transformers' own keys (return_dict, id2label, ...) are defaults it restores on load; written, they
        # would be keys ARMTConfig refuses.
        return {k: v for k, v in super().to_dict().items() if k in ARMT_FIELDS or (k in HF_CONFIG_KEYS and v is not None)}

    def to_diff_dict(self) -> dict[str, Any]:
        # Every field, defaults too (4.x would drop those equal to this class's): a checkpoint must not depend on
        # the defaults of the code that reads it.
        return self.to_dict()


class _ARMTLayers(ARMTModel):
    """ARMTModel whose __init__ may be called without a config: PreTrainedModel.__init__ calls super().__init__()
    with none, which in ARMTHFModel's method order lands here, after the layers are built."""

    def __init__(self, config: ARMTConfig | ARMTHFConfig | None = None) -> None:
        if config is not None:
            super().__init__(config)  # type: ignore[arg-type]  # ARMTHFConfig reads as an ARMTConfig


class ARMTHFModel(PreTrainedModel, _ARMTLayers):
    """An ARMTModel that is also a transformers PreTrainedModel: AutoModel.from_pretrained(dir) returns one.

    Method order: PreTrainedModel first, so that from_pretrained and save_pretrained are transformers' (a model
    directory either way); every ARMT method is ARMTModel's own."""

    config_class = ARMTHFConfig
    # The model is its own base model: no attribute has this name, and no weight name starts with it.
    base_model_prefix = "armt"

    def __init__(self, config: ARMTHFConfig) -> None:
        _ARMTLayers.__init__(self, config)  # nn.Module, then the layers, exactly as ARMTModel builds them
        PreTrainedModel.__init__(self, config)  # transformers' bookkeeping; its super().__init__() is a no-op here
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # ARMTModel's initialisation (zero-init memory reads and convolution), not transformers' generic one. It
        # runs only on weights a checkpoint did not provide: transformers guards torch.nn.init while it does.
        ARMTModel._init_weights(module)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> ARMTHFModel:
        if _DEFAULT_DTYPE_AUTO and kwargs.get("dtype") is None and kwargs.get("torch_dtype") is None:
            kwargs["dtype"] = torch.float32  # what ARMTModel.from_pretrained and the CLI on CPU give
        return super().from_pretrained(*args, **kwargs)


AutoConfig.register(MODEL_TYPE, ARMTHFConfig)
AutoModel.register(ARMTHFConfig, ARMTHFModel)
