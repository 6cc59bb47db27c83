"""Stage `tokenize`: train a byte-level BPE tokenizer on the corpus, cut the corpus into blocks.

    python tokenize_corpus.py [--config-name train] [HYDRA_OVERRIDES...]

Reads the `tokenize` section of the same Hydra config `repro train` composes, so
the two stages agree on vocabulary and block size. Writes, atomically:

    <out_dir>/tokenizer.json   HF `tokenizers` format; the same bytes on every run
    <out_dir>/blocks.jsonl     one {"ids": [...]} per line, block_size + 1 ids each

Both are inputs of the `train` stage and are hashed into its repro.lock.
Measured (tests/test_tiny_lm.py): the tokenizer's bytes do not depend on
RAYON_NUM_THREADS, so the thread count of this stage is not pinned.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from repro.canonical import atomic_write_bytes
from repro.errors import ConfigError, ReproError
from repro.source.config import ConfigSource, compose, require
from repro.source.filetree import expand_patterns

ROOT = Path(__file__).resolve().parent


def train_tokenizer(files: list[Path], vocab_size: int, min_frequency: int, end_of_text: str) -> Any:
    """GPT-2-style byte-level BPE: every byte is in the alphabet, so nothing is unknown."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, key=value (the same ones `repro train` gets)")
    ap.add_argument("--config-name", default="train")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    try:
        cfg = compose(ConfigSource(ROOT / "configs", args.config_name, ROOT, embedded=False), args.overrides)
        eot = require(cfg, "tokenize.end_of_text", str)
        files = [ROOT / p for p in expand_patterns(ROOT, require(cfg, "tokenize.corpus", list))]
        tok = train_tokenizer(files, require(cfg, "tokenize.vocab_size", int),
                              require(cfg, "tokenize.min_frequency", int), eot)
        blocks = encode_blocks(tok, files, require(cfg, "tokenize.block_size", int), eot)
        if not blocks:
            raise ConfigError("tokenize.block_size: larger than the whole tokenized corpus; no block written")
    except ReproError as exc:
        print(f"tokenize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = ROOT / require(cfg, "tokenize.out_dir", str)
    atomic_write_bytes(out / "tokenizer.json", tok.to_str(pretty=True).encode("utf-8"))
    lines = "".join(json.dumps({"ids": b}, separators=(",", ":")) + "\n" for b in blocks)
    atomic_write_bytes(out / "blocks.jsonl", lines.encode("utf-8"))
    print(f"tokenize: {len(files)} files -> vocabulary {tok.get_vocab_size()}, {len(blocks)} blocks of "
          f"{len(blocks[0])} ids in {out.relative_to(ROOT)}/ ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
