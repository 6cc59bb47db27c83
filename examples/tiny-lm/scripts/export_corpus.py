"""Export three of Jane Austen's novels from Debian's `r-cran-janeaustenr` to text, once.

Why a script and not a runtime dependency: the exported files are the example's
*source*; they are committed and hashed. The Debian package and the `rdata`
reader are needed only to re-create them (see corpus/PROVENANCE.md):

    apt-get download r-cran-janeaustenr=1.0.0-1
    dpkg-deb -x r-cran-janeaustenr_1.0.0-1_all.deb deb/
    pip install rdata==1.1.0
    python scripts/export_corpus.py deb/usr/lib/R/site-library/janeaustenr/data

Another novel into another folder (examples/finetune uses Northanger Abbey):

    python scripts/export_corpus.py DATA_DIR ../finetune/corpus northangerabbey=northanger-abbey.txt

R's lazy-load database holds each novel as a character vector, one element per
printed line; we join the lines with "\\n" and end the file with one "\\n".
"""

from __future__ import annotations

import gzip
import struct
import sys
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "corpus"
# R object name -> file name. Three novels (~1.8 MB) keep the repo small and the
# tokenize stage quick; the other three are in the same package.
NOVELS = {
    "prideprejudice": "pride-and-prejudice.txt",
    "sensesensibility": "sense-and-sensibility.txt",
    "persuasion": "persuasion.txt",
}


def _r_object(blob: bytes) -> object:
    import rdata  # only needed here

    return rdata.conversion.convert(rdata.parser.parse_data(blob))


def main(data_dir: str, out: Path = OUT, novels: dict[str, str] = NOVELS) -> int:
    base = Path(data_dir)
    index = _r_object(gzip.decompress((base / "Rdata.rdx").read_bytes()))
    db = (base / "Rdata.rdb").read_bytes()
    for name, filename in novels.items():
        offset, length = (int(v) for v in index["variables"][name])  # type: ignore[index]
        record = db[offset : offset + length]
        (size,) = struct.unpack(">I", record[:4])  # big-endian length, then zlib
        blob = zlib.decompress(record[4:])
        if len(blob) != size:
            raise SystemExit(f"{name}: expected {size} bytes, got {len(blob)}")
        lines = [str(line) for line in _r_object(blob)]  # type: ignore[attr-defined]
        text = "\n".join(line.rstrip() for line in lines).strip("\n") + "\n"
        (out / filename).write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {out / filename} ({len(lines)} lines, {len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(main(sys.argv[1], Path(sys.argv[2]), dict(a.split("=", 1) for a in sys.argv[3:])))
    sys.exit(main(sys.argv[1]))
