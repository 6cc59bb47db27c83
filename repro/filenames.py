"""The names of the files a build writes, in one place: out_dir, checkpoints, release.

Every module that writes, reads, refuses or reserves one of these names imports
it from here, so a rename (or a new pickle suffix) happens once.
"""

from __future__ import annotations

# out_dir: what `repro train` leaves.
LOCK_NAME = "repro.lock"  # the lockfile (docs/lockfile.md)
WEIGHTS_NAME = "model.safetensors"  # the weights; also the model file inside a checkpoint
METRICS_NAME = "metrics.jsonl"  # one {"loss", "step"} line per logged step
RUN_NAME = "run.json"  # machine-incidental facts (host, timings, git): never hashed into the lock
STEPS_NAME = "step_digests.txt"  # parameter digests before the first and after every step; sha256 in the lock
CHECK_NAME = "check.json"  # the latest `repro check` report; `repro card` shows it
RECORD_NAME = "verification.json"  # left beside a lock by `repro verify`; `repro audit` reads it
OUT_DIR_LOCK = ".repro-train.lock"  # held while a build writes out_dir
CHECKPOINTS_DIR = "checkpoints"  # step folders, deleted once the outputs are complete

# Written into a release folder after the build, by the trust commands (`repro card`, `repro sign`,
# `repro attest`): evidence about the model, never its source.
CARD_NAME = "README.md"  # the model card
PLOT_NAME = "loss.png"  # the card's loss curve
REBUILD_NAME = "rebuild.yaml"  # the card's composable config for a rebuild
SIGNATURE_NAME = "model.sig"  # the model-signing bundle
PROVENANCE_NAME = "provenance.intoto.json"  # the in-toto statement

# Names a task's exported files may not take.
OWN_OUTPUTS = (WEIGHTS_NAME, METRICS_NAME, RUN_NAME, STEPS_NAME, LOCK_NAME)

# In a project: repro's own folder (the hash cache, a stage's staging folder), never hashed as data;
# and the DVC pipeline that `repro dvc-yaml` checks and writes.
REPRO_DIR = ".repro"
STAGING_DIR = f"{REPRO_DIR}/staging"  # a stage's outputs until they are complete (repro.builder.stage)
DVC_YAML_NAME = "dvc.yaml"

# One step's operator trace (`repro check --localize`, repro.train.trace).
OPS_NAME = "ops.json"
VALUES_NAME = "values.safetensors"

# Inside one checkpoint folder.
MANIFEST_NAME = "MANIFEST.json"
STATE_NAME = "state.json"
OPTIMIZER_NAME = "optimizer.safetensors"

# Suffixes of pickled checkpoints (torch.save, accelerate save_state): never loaded,
# because unpickling runs code that the file chooses.
PICKLED_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
