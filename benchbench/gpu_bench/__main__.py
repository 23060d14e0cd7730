"""`python -m benchbench.gpu_bench`: the one-call GPU benchmark (and its worker processes)."""
from benchbench.gpu_bench.cli import main

raise SystemExit(main())
