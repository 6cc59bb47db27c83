"""The fine-tuned model: the base release's GPT-2 with LoRA adapters (HF `peft`).

repro resolves `model.base` (a release folder under the project root) to an
absolute path before building the model, and hashes that folder's weights and
lock into the fine-tune's repro.lock, so the base is part of the source.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from repro.canonical import canonical_json
from repro.tasks import CausalLM
from repro.train.weights import METADATA, to_cpu_state


def build(base: str, r: int, alpha: int, dropout: float, target_modules: list[str]) -> Any:
    """GPT-2 from the base folder (local files only), frozen, with trainable LoRA on `target_modules`.

    LoRA's A matrices are drawn from torch's seeded generator and its B matrices
    start at zero, so the initial model is the base model, bit for bit.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # a build's stderr is for repro's progress and errors
    lora = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      bias="none", fan_in_fan_out=True)  # GPT-2's Conv1D stores weights transposed
    with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6; nothing to act on here
        warnings.simplefilter("ignore", FutureWarning)
        model = GPT2LMHeadModel.from_pretrained(base, local_files_only=True)
        return get_peft_model(model, lora)


class AdapterLM(CausalLM):
    """Causal-LM training whose release is the adapter, loadable with `PeftModel.from_pretrained`.

    `base` is the base release folder as the config names it (relative to the
    project root): it is what `adapter_config.json` records, never the absolute
    path the model was loaded from, which differs from machine to machine.
    """

    def __init__(self, base: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base

    def export(self, model: nn.Module, root: Path) -> dict[str, bytes]:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save

        config = model.peft_config["default"].to_dict()  # type: ignore[operator,index]
        config["base_model_name_or_path"] = self.base
        config = {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.items()}
        state = get_peft_model_state_dict(model)
        files = {"adapter_config.json": canonical_json(config),
                 "adapter_model.safetensors": save(to_cpu_state(state), metadata=METADATA)}
        if self.tokenizer is not None:  # the base's tokenizer, byte for byte
            files.update({k: v for k, v in super().export(model.get_base_model(), root).items()  # type: ignore[operator]
                          if k.startswith("tokenizer")})
        return files
