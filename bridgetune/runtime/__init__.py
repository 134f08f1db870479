"""Where the code runs: the processes of a launch (processes.py: rank, world size, the main
process, work shared between processes, sharded models). Low: data, training and inference
use it."""
