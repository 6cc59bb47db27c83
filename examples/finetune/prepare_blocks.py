"""Stage `prepare`: cut the fine-tuning corpus into Parquet token blocks with the *base* tokenizer.

    repro run prepare --root .. [--config-name smoke] [HYDRA_OVERRIDES...]

A fine-tune must read text the way its base model does, so this stage encodes
with the tokenizer inside the base release folder (`prepare.tokenizer`), never a
new one. `repro run` hashes its inputs and code first, then moves into place one
Parquet file with a single column `ids` (block_size + 1 token ids a row), which
`repro train` loads through `datasets`' parquet builder. The bytes are the same on every run: pyarrow writes no
timestamps, and the writer settings are fixed below.

Paths are relative to the project root, `examples/` (the folder that holds this
project and its base, `tiny-lm/`): see README.md.
"""

from __future__ import annotations

import io
from pathlib import Path

from repro.errors import ConfigError


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


def prepare(inputs: list[Path], outputs: list[Path], *, end_of_text: str, block_size: int) -> None:
    """The stage: `inputs` are the base's tokenizer.json and the corpus files; `outputs` the Parquet file."""
    tokenizers = [f for f in inputs if f.name == "tokenizer.json"]
    corpus = [f for f in inputs if f.name != "tokenizer.json"]
    if len(tokenizers) != 1:
        raise ConfigError("stages.prepare.inputs: expected exactly one tokenizer.json (the base release's)")
    blocks = encode_blocks(tokenizers[0].read_text(encoding="utf-8"), corpus, block_size, end_of_text)
    if not blocks:
        raise ConfigError("prepare.block_size: larger than the whole tokenized corpus; no block written")
    (out,) = outputs
    out.write_bytes(parquet_bytes(blocks))
    print(f"prepare: {len(corpus)} file(s) -> {len(blocks)} blocks of {len(blocks[0])} ids")
