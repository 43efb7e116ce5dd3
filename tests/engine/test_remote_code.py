"""``trust_remote_code``: custom architectures declared in ``auto_map``."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

CONFIG_PY = """
from transformers import PretrainedConfig

class TinyCustomConfig(PretrainedConfig):
    model_type = "tiny-custom"

    def __init__(self, vocab_size=160, hidden_size=16, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
"""
MODEL_PY = """
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from .configuration_custom import TinyCustomConfig

class TinyCustomModel(PreTrainedModel):
    config_class = TinyCustomConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.mix = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        h = torch.tanh(self.mix(self.emb(input_ids)))
        return BaseModelOutput(last_hidden_state=h)
"""


@pytest.fixture(scope="module")
def custom_folder(tiny_dir, tiny_bert):
    import shutil

    folder = tiny_dir / "custom"
    if folder.exists():
        return folder
    folder.mkdir()
    for f in tiny_bert.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(f, folder / f.name)
    (folder / "configuration_custom.py").write_text(textwrap.dedent(CONFIG_PY))
    (folder / "modeling_custom.py").write_text(textwrap.dedent(MODEL_PY))
    auto_map = {
        "AutoConfig": "configuration_custom.TinyCustomConfig",
        "AutoModel": "modeling_custom.TinyCustomModel",
    }
    config = {
        "model_type": "tiny-custom",
        "architectures": ["TinyCustomModel"],
        "vocab_size": 160,
        "hidden_size": 16,
        "auto_map": auto_map,
    }
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    from safetensors.torch import save_file

    save_file(
        {"emb.weight": torch.randn(160, 16), "mix.weight": torch.randn(16, 16), "mix.bias": torch.randn(16)},
        str(folder / "model.safetensors"),
    )
    return folder


def test_custom_code_needs_trust(custom_folder):
    from vllm_pool import LLM

    with pytest.raises(ValueError, match="trust_remote_code"):
        LLM(str(custom_folder))


def test_custom_code_loads_with_trust(custom_folder):
    import transformers

    from vllm_pool import LLM

    llm = LLM(str(custom_folder), trust_remote_code=True, pooler_config={"pooling_type": "MEAN"})
    (out,) = llm.embed("hello world", use_tqdm=False)
    tok = transformers.AutoTokenizer.from_pretrained(custom_folder)
    model = transformers.AutoModel.from_pretrained(custom_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        h = model(**tok("hello world", return_tensors="pt")).last_hidden_state[0].mean(0)
    torch.testing.assert_close(
        torch.tensor(out.outputs.embedding), torch.nn.functional.normalize(h, dim=0), rtol=1e-4, atol=1e-5
    )
