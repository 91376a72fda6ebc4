#include "converter/export/decilm_config.h"

namespace kvfold {

const char* const kDeciConfigSource =
    R"PY(# Written by kvfold (docs/formats.md, "Per-layer KV heads"): the configuration of a
# DeciLMForCausalLM checkpoint whose layers have different KV-head counts. A LlamaConfig whose
# block_configs entries are read as attributes, as vLLM's nemotron_nas.py reads them.
from types import SimpleNamespace

from transformers import LlamaConfig


def _as_attributes(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _as_attributes(v) for k, v in value.items()})
    return value


def _as_dict(value):
    if isinstance(value, SimpleNamespace):
        return {k: _as_dict(v) for k, v in vars(value).items()}
    return value


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        super().__init__(**kwargs)
        self.block_configs = [_as_attributes(b) for b in (block_configs or [])]

    def to_dict(self):
        out = super().to_dict()
        out["block_configs"] = [_as_dict(b) for b in self.block_configs]
        return out
)PY";

}  // namespace kvfold
