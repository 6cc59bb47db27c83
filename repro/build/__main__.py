"""`python -m repro.build SPEC`: the child process `repro.build.child` starts (one per rank)."""

import gc
import sys

from repro.build.run import rebuild_main

if __name__ == "__main__":
    # A build child spends most of its start-up importing torch, torch._dynamo and datasets: about a
    # million long-lived objects, which the cyclic collector would scan again and again (its first
    # generation runs every 700 allocations). Collection is off until they are all loaded;
    # repro.train.loop freezes them and turns it back on before the first step. A digits build takes
    # ~0.8 s less CPU, with the same weights (BENCHMARKS.md). Collection frees only unreachable
    # objects, so it decides no bit.
    gc.disable()
    sys.exit(rebuild_main(sys.argv[1]))
