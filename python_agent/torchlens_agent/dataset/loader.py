"""Batches of stimuli, loaded while the forward runs: `iter_batches` yields one stacked batch per
row range, in the order given, with up to two batches per worker decoded ahead.

Workers are torch DataLoader processes started by fork (the model file's hooks live in a module
imported by path, which spawn could not pickle), before any captured forward, so they never see
a capture session. A stimulus that cannot be read comes back from a worker as a marker rather
than an exception, so the caller gets its path and message intact.
"""

from typing import Iterator, List, Optional, Tuple

import torch
import torch.utils.data

from ..errors import UserError
from .stimuli import BadStimulus, StimulusSet


class Batch:
    def __init__(self, start: int, stop: int, inputs: torch.Tensor, bad: List[Tuple[int, str, str]]):
        self.start = start
        self.stop = stop
        self.inputs = inputs
        self.bad = bad


def _load_one(stimuli: StimulusSet, i: int):
    try:
        return stimuli.load(i)
    except BadStimulus as exc:
        return exc


class _Rows(torch.utils.data.Dataset):
    def __init__(self, stimuli: StimulusSet):
        self.stimuli = stimuli

    def __len__(self) -> int:
        return len(self.stimuli)

    def __getitem__(self, i: int):
        return _load_one(self.stimuli, i)


def _keep_list(items):
    return items  # collation happens in the caller, which knows about bad rows


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _stack(stimuli: StimulusSet, start: int, items: list, skip_bad: bool) -> Batch:
    bad: List[Tuple[int, str, str]] = []
    shape: Optional[Tuple[int, ...]] = None
    first_good = None
    for k, item in enumerate(items):
        if isinstance(item, BadStimulus):
            where = f" ({item.path})" if item.path else ""
            if not skip_bad:
                raise UserError("stimuli", f"cannot read stimulus {item.sid}{where}: {item.message}",
                                "fix or remove the file, or pass --skip-bad to record it in the output and go on")
            bad.append((start + k, item.sid, item.message))
            continue
        if shape is None:
            shape, first_good = tuple(item.shape), k
        elif tuple(item.shape) != shape:
            a, b = stimuli.ids[start + (first_good or 0)], stimuli.ids[start + k]
            raise UserError("stimuli", f"stimuli have different shapes: {a} is {shape} but {b} is {tuple(item.shape)}",
                            "give a preset (--preset imagenet) or define transform(image) in the model file so that "
                            "every stimulus has one shape")
    if shape is None:
        shape = stimuli.item_shape()
    dtype = next((t.dtype for t in items if not isinstance(t, BadStimulus)), torch.float32)
    rows = [torch.zeros(shape, dtype=dtype) if isinstance(t, BadStimulus) else t for t in items]
    return Batch(start, start + len(items), torch.stack(rows), bad)


def iter_batches(stimuli: StimulusSet, ranges: List[Tuple[int, int]], workers: int,
                 skip_bad: bool) -> Iterator[Batch]:
    if not ranges:
        return
    if stimuli.sequential:
        yield from _sequential(stimuli, ranges, skip_bad)
        return
    if workers <= 0:
        for start, stop in ranges:
            yield _stack(stimuli, start, [_load_one(stimuli, i) for i in range(start, stop)], skip_bad)
        return
    import multiprocessing

    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    loader = torch.utils.data.DataLoader(
        _Rows(stimuli), batch_sampler=[list(range(s, e)) for s, e in ranges], num_workers=workers,
        collate_fn=_keep_list, worker_init_fn=_worker_init, multiprocessing_context=context, prefetch_factor=2)
    for (start, _), items in zip(ranges, loader):
        yield _stack(stimuli, start, items, skip_bad)


def _sequential(stimuli: StimulusSet, ranges: List[Tuple[int, int]], skip_bad: bool) -> Iterator[Batch]:
    """A generator's stimuli: streamed once from the first row asked for, in order."""
    stream = None
    at = -1
    for start, stop in ranges:
        if stream is None or start != at:
            stream = stimuli.stream(start)
            at = start
        items = []
        for _ in range(start, stop):
            items.append(next(stream))
            at += 1
        yield _stack(stimuli, start, items, skip_bad)
