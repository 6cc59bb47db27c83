"""Check a lockfile against this machine: inputs first, then a pinned rebuild.

Cheapest and most fundamental checks come first, so a wrong data file is named
in seconds instead of after a training run:

1. read and validate the lock, find the project root (unusable: exit 2); a native build's lock
   from another CPU vendor or model stops here (exit 3);
2. re-hash the source (data, the recorded project code, the config) and check
   that the lock's build pins agree with its config; compare the recorded
   toolchain with this one (notes, not mismatches); no torch is imported up to here;
3. check a weights file: `--weights FILE`, or the one beside the lock;
4. check this machine can honour the pins: the CPU level (exit 3);
5. rebuild in a fresh process under the pins, and compare the rebuilt lock with
   the lock: pins, loss trajectory, every tensor, and the toolchain it ran with.

Source and toolchain are told apart (docs/verify.md): a differing source is a
mismatch (exit 1); a differing toolchain is a note when the bits agree, and the
likely cause (exit 3) when they do not.

Everything that differs is a `repro.lock.lockdiff.Difference`, the vocabulary `repro diff`
uses too. Only `repro.commands.verify` prints.

The modules, in the order a verification uses them:

- `run`: `verify` itself, the steps above in order, and how the project root is found;
- `native`: a `build=native` lock names its CPU; another CPU stops verify at once (exit 3);
- `checks`: the checks before a rebuild, each a function from the lock to differences;
- `rebuild_compare`: the rebuild, and its lock compared with the recorded one;
- `report`: what verify was asked (`VerifyOptions`), what it found (`VerifyReport`),
  and the verification record it leaves for `repro audit`;
- `render`: the report as lines for people.
"""
