"""Stage `prepare`: cut the fine-tuning corpus into Parquet token blocks with the *base* tokenizer.

    python prepare_blocks.py [--config-name train] [HYDRA_OVERRIDES...]

A fine-tune must read text the way its base model does, so this stage encodes
with the tokenizer inside the base release folder (`prepare.tokenizer`), never a
new one. It writes, atomically, one Parquet file with a single column `ids`
(block_size + 1 token ids a row), which `repro train` loads through `datasets`'
parquet builder. The bytes are the same on every run: pyarrow writes no
timestamps, and the writer settings are fixed below.

Paths are relative to the project root, `examples/` (the folder that holds this
project and its base, `tiny-lm/`): see README.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from repro.canonical import atomic_write_bytes
from repro.errors import ConfigError, ReproError
from repro.source.config import ConfigSource, compose, require
from repro.source.hashing import expand_patterns

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def encode_blocks(tokenizer_json: str, files: list[Path], block_size: int, end_of_text: str) -> list[list[int]]:
    """The corpus as one token stream (files in path order, each ended by `end_of_text`),
    cut into non-overlapping rows of block_size + 1 ids; the remainder is dropped."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    eot = tok.token_to_id(end_of_text)
    if eot is None:
        raise ConfigError(f"prepare.end_of_text: {end_of_text!r} is not in the base tokenizer's vocabulary")
    stream: list[int] = []
    for f in files:
        stream += tok.encode(f.read_text(encoding="utf-8")).ids + [eot]
    row = block_size + 1
    return [stream[i : i + row] for i in range(0, len(stream) - row + 1, row)]


def parquet_bytes(blocks: list[list[int]]) -> bytes:
    """One column `ids` (list<int32>), uncompressed, one row group, no statistics: fixed bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"ids": pa.array(blocks, type=pa.list_(pa.int32()))})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="NONE", row_group_size=len(blocks), write_statistics=False,
                   use_dictionary=False)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, key=value (the same ones `repro train` gets)")
    ap.add_argument("--config-name", default="train")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    try:
        cfg = compose(ConfigSource(HERE / "configs", args.config_name, ROOT, embedded=False), args.overrides)
        files = [ROOT / p for p in expand_patterns(ROOT, require(cfg, "prepare.corpus", list))]
        tokenizer = ROOT / require(cfg, "prepare.tokenizer", str)
        if not tokenizer.is_file():
            raise ConfigError(f"prepare.tokenizer: {tokenizer.relative_to(ROOT)} not found; build the base "
                              "model first (cd ../tiny-lm && see its README)")
        blocks = encode_blocks(tokenizer.read_text(encoding="utf-8"), files,
                               require(cfg, "prepare.block_size", int), require(cfg, "prepare.end_of_text", str))
        if not blocks:
            raise ConfigError("prepare.block_size: larger than the whole tokenized corpus; no block written")
    except ReproError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return exc.exit_code
    out = ROOT / require(cfg, "prepare.out_dir", str) / "blocks.parquet"
    atomic_write_bytes(out, parquet_bytes(blocks))
    print(f"prepare: {len(files)} file(s) -> {len(blocks)} blocks of {len(blocks[0])} ids in "
          f"{out.relative_to(ROOT)} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
