"""TEMPORARY (replaced by the stimuli helper's module)."""
import torch


class Batch:
    def __init__(self, start, stop, inputs, bad):
        self.start, self.stop, self.inputs, self.bad = start, stop, inputs, bad


def iter_batches(stimuli, ranges, workers, skip_bad):
    for start, stop in ranges:
        yield Batch(start, stop, torch.stack([stimuli.load(i) for i in range(start, stop)]), [])
