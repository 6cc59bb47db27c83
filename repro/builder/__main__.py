"""`python -m repro.builder SPEC`: the child process `repro.builder.child` starts (one per rank)."""

import gc
import sys

from repro import lifetime
from repro.errors import Interrupted

if __name__ == "__main__":
    # First, before the long imports: a stop signal ends this process cleanly (no traceback; the
    # training loop stops at its next step), and so does its parent's death (a torchrun rank's parent
    # is torchrun's agent, which does not set this for it).
    lifetime.stop_on_signals()
    lifetime.die_with_parent()
    # A build child spends most of its start-up importing torch, torch._dynamo and datasets: about a
    # million long-lived objects, which the cyclic collector would scan again and again (its first
    # generation runs every 700 allocations). Collection is off until they are all loaded;
    # repro.train.loop freezes them and turns it back on before the first step. A digits build takes
    # ~0.8 s less CPU, with the same weights (BENCHMARKS.md). Collection frees only unreachable
    # objects, so it decides no bit.
    gc.disable()
    try:
        from repro.builder.build import child_main

        code = child_main(sys.argv[1])
    except Interrupted as exc:  # before the spec was read (child_main reports the others itself)
        code = exc.exit_code
    sys.exit(code)
