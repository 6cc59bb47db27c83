"""Stage `tokenize`: train a byte-level BPE tokenizer on the corpus, cut the corpus into blocks.

    repro run tokenize                       # declared under `stages.tokenize` in configs/train.yaml
    repro run tokenize --config-name smoke   # the CI-sized build

repro hashes the corpus, this file and the config, then calls `tokenize` in a
fresh process under the build pins and writes, atomically:

    <out_dir>/tokenizer.json      HF `tokenizers` format; the same bytes on every run
    <out_dir>/blocks.jsonl        one {"ids": [...]} per line, block_size + 1 ids each
    <out_dir>/tokenize.stage.json the stage record the training lock embeds

Measured (tests/test_tiny_lm.py): the tokenizer's bytes do not depend on
RAYON_NUM_THREADS, so the thread count of this stage is not pinned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Imported here, not inside the functions: repro records the version of every
# distribution the stage's module imports (its toolchain) before the stage runs.
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from repro.errors import ConfigError


def train_tokenizer(files: list[Path], vocab_size: int, min_frequency: int, end_of_text: str) -> Any:
    """GPT-2-style byte-level BPE: every byte is in the alphabet, so nothing is unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[end_of_text],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train([str(f) for f in files], trainer)
    return tok


def encode_blocks(tok: Any, files: list[Path], block_size: int, end_of_text: str) -> list[list[int]]:
    """The corpus as one token stream (files in path order, each ended by `end_of_text`),
    cut into non-overlapping rows of block_size + 1 ids; the remainder is dropped."""
    eot = tok.token_to_id(end_of_text)
    stream: list[int] = []
    for f in files:
        stream += tok.encode(f.read_text(encoding="utf-8")).ids + [eot]
    row = block_size + 1
    return [stream[i : i + row] for i in range(0, len(stream) - row + 1, row)]


def tokenize(inputs: list[Path], outputs: list[Path], *, vocab_size: int, min_frequency: int,
             end_of_text: str, block_size: int) -> None:
    """The stage: `inputs` are the corpus files in path order; `outputs` the tokenizer and the blocks."""
    tokenizer_path, blocks_path = outputs
    tok = train_tokenizer(inputs, vocab_size, min_frequency, end_of_text)
    blocks = encode_blocks(tok, inputs, block_size, end_of_text)
    if not blocks:
        raise ConfigError("tokenize.block_size: larger than the whole tokenized corpus; no block written")
    tokenizer_path.write_bytes(tok.to_str(pretty=True).encode("utf-8"))
    lines = "".join(json.dumps({"ids": b}, separators=(",", ":")) + "\n" for b in blocks)
    blocks_path.write_bytes(lines.encode("utf-8"))
    print(f"tokenize: {len(inputs)} files -> vocabulary {tok.get_vocab_size()}, {len(blocks)} blocks of "
          f"{len(blocks[0])} ids")
