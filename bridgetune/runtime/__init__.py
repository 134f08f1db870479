"""Where the code runs: the processes of a launch (processes.py: rank, world size, the main
process, work shared between processes, sharded models) and what the processor computes
natively (hardware.py: bf16). Low: data, training and inference
use it."""
