"""The training side: configuration, tokenizer, task data, objectives, the phase loop, checkpoints, reports."""
