"""Runtime helpers for the command-line tools: checkpoints, torch.distributed, profiling."""
