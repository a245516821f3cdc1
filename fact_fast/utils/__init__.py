"""Runtime helpers for the command-line tools: checkpoints and torch.distributed."""
