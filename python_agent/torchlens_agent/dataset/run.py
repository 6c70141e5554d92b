"""The `dataset` request (docs/dataset.md): one model over a stimulus set, batch by batch.

A conversation rather than one request: the agent loads the model and lists the stimuli, sends a
`stimuli` frame, then answers the CLI's messages until `shutdown` (or stdin closes):

- `dataset_inputs`: save stacked stimulus rows as .pt files, the inputs of `--check`'s
  one-stimulus `extract` runs;
- `dataset_probe`: one captured forward of the first stimuli, streamed as an extract's dry run:
  its layer log labels the passes, and every batch's graph must match it;
- `dataset_run`: run batches under capture, check each forward's graph against the probe's, write
  the selected passes' rows into the layers' .npy files, make them durable, and send a `batch`
  frame per batch; the CLI records completion only on that frame;
- `dataset_compare`: compare saved rows with arrays of `extract` runs (`--check`).
"""

import math
import time
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from ..capture.install import Wrappers
from ..capture.run import run_captured
from ..capture.session import CaptureSession
from ..extract import send_done
from ..errors import UserError
from ..load import seed_everything
from ..request import Loaded, guarded
from ..wire import Wire
from .loader import iter_batches
from .rows import open_rows, to_rows
from .session import DatasetSession, first_difference
from .stimuli import StimulusSet, open_stimuli


def dataset(wire: Wire, request: Dict[str, Any]) -> int:
    def body(loaded: Loaded, wrappers: Wrappers, stage: Dict[str, str]) -> None:
        stage["phase"] = "stimuli"
        stimuli = open_stimuli(request["stimuli"], loaded.module)
        if request.get("ids_out"):
            _write_ids(request["ids_out"], stimuli.ids)
        training = sorted(a or "(the model)" for a, m in loaded.model.named_modules() if m.training)
        wire.send({"type": "stimuli", "kind": stimuli.kind, "n": len(stimuli), "fingerprint": stimuli.fingerprint,
                   "describe": stimuli.describe(), "training": training[:5], "num_training": len(training)},
                  flush=True)
        conversation = Conversation(wire, request, loaded, wrappers, stimuli)
        while True:
            msg = wire.recv()
            if msg is None or msg.get("type") == "shutdown":
                return
            handler = conversation.handlers.get(str(msg.get("type")))
            if handler is None:
                raise UserError("internal", f"unknown dataset message {msg.get('type')!r}",
                                "this is a bug in torchlens; please report it")
            stage["phase"] = _PHASES.get(msg["type"], "internal")
            handler(msg)

    return guarded(wire, request, body)


# what a failure inside each message is about (errors.py: the error frame's phase); a UserError
# names its own
_PHASES = {"dataset_inputs": "stimuli", "dataset_probe": "capture", "dataset_run": "capture",
           "dataset_compare": "internal"}


def _write_ids(path: str, ids: List[str]) -> None:
    for sid in ids:
        if "\n" in sid or "\r" in sid:
            raise UserError("stimuli", f"the stimulus id {sid!r} holds a line break, which stimuli.txt cannot",
                            "rename the file (or yield ids without line breaks from stimuli())")
    with open(path, "w", encoding="utf-8") as f:
        for sid in ids:
            f.write(sid)
            f.write("\n")


def row_difference(saved: Any, ref: Any) -> Tuple[float, float]:
    """(max |saved - ref|, max(1, max |ref| over its finite values)) for `--check`. Equal
    infinities and NaNs on both sides match; one on one side only is an infinite difference."""
    a, b = np.asarray(saved, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        gap = np.where(same, 0.0, np.abs(a - b))
    finite = np.abs(b[np.isfinite(b)])
    scale = max(1.0, float(np.max(finite)) if finite.size else 1.0)
    diff = float(np.max(gap)) if b.size else 0.0
    return (math.inf if math.isnan(diff) else diff), scale


class Conversation:
    def __init__(self, wire: Wire, request: Dict[str, Any], loaded: Loaded, wrappers: Wrappers,
                 stimuli: StimulusSet):
        self.wire = wire
        self.loaded = loaded
        self.wrappers = wrappers
        self.stimuli = stimuli
        self.workers = int(request.get("workers", 0))
        self.skip_bad = bool(request.get("skip_bad", False))
        self.handlers = {"dataset_inputs": self.inputs, "dataset_probe": self.probe, "dataset_run": self.run,
                         "dataset_compare": self.compare}

    # dataset_inputs -----------------------------------------------------------------------------

    def inputs(self, msg: Dict[str, Any]) -> None:
        items = msg["items"]
        bad: List[List[Any]] = []
        batches = iter_batches(self.stimuli, [(it["start"], it["stop"]) for it in items], 0, self.skip_bad)
        for item, batch in zip(items, batches):
            torch.save(batch.inputs, item["path"])
            bad += [list(b) for b in batch.bad]
        self.wire.send({"type": "inputs", "bad": bad}, flush=True)

    # dataset_probe -------------------------------------------------------------------------------

    def probe(self, msg: Dict[str, Any]) -> None:
        """One captured forward of rows [start, stop), streamed as an extract's dry run (`pass`,
        `module`, `done` frames): the CLI builds its layer log with extract's own code, so labels
        mean what they mean there, and every batch's graph is checked against it."""
        wall0 = time.perf_counter()
        batch = next(iter_batches(self.stimuli, [(msg["start"], msg["stop"])], 0, self.skip_bad))
        loaded = self.loaded
        session = CaptureSession(self.wire, loaded.model, save="none")
        seed_everything(loaded.seed)
        out, forward_s = run_captured(self.wrappers, session, loaded.model, (batch.inputs.to(loaded.device),), {},
                                      grad=loaded.grad)
        send_done(self.wire, session, self.wrappers, session.add_outputs(out), forward_s, wall0)

    # dataset_run ---------------------------------------------------------------------------------

    def _forward(self, inputs: torch.Tensor, ids: List[int], seed: int) -> DatasetSession:
        loaded = self.loaded
        session = DatasetSession(loaded.model, ids)
        seed_everything(seed)  # a batch's rows do not depend on which task ran it, nor after what
        out, _ = run_captured(self.wrappers, session, loaded.model, (inputs.to(loaded.device),), {}, grad=loaded.grad)
        session.add_outputs(out)  # the output passes, as extract records them (they can be selected too)
        return session

    def run(self, msg: Dict[str, Any]) -> None:
        layers: List[Dict[str, Any]] = msg["layers"]
        ids = [layer["id"] for layer in layers]
        reference = msg["reference"]
        files = open_rows(layers, msg["dir"])
        todo: List[Tuple[int, int, int]] = [tuple(b) for b in msg["batches"]]
        seed = self.loaded.seed
        try:
            loader = iter_batches(self.stimuli, [(s, e) for _, s, e in todo], self.workers, self.skip_bad)
            waited = time.perf_counter()
            for (index, start, stop), batch in zip(todo, loader):
                wait_s = time.perf_counter() - waited
                t0 = time.perf_counter()
                session = self._forward(batch.inputs, ids, seed + index)
                forward_s = time.perf_counter() - t0
                diff = first_difference(reference, session.signature)
                if diff:
                    raise self._graph_changed(batch, ids, index, diff)
                for layer, rows_file in files:
                    rows = self._rows(session, layer, start, stop)
                    for row, _, _ in batch.bad:  # a bad stimulus's row says so: NaN, not a made-up value
                        if rows.dtype.kind in "fc":
                            rows[row - start] = np.nan
                    rows_file.write(start, rows)
                for _, rows_file in files:
                    rows_file.sync()
                self.wire.send({"type": "batch", "index": index, "start": start, "stop": stop,
                                "bad": [list(b) for b in batch.bad], "forward_ms": forward_s * 1000.0,
                                "wait_ms": wait_s * 1000.0, "write_ms": (time.perf_counter() - t0 - forward_s) * 1000.0},
                               flush=True)
                waited = time.perf_counter()
        finally:
            for _, rows_file in files:
                rows_file.close()
        self.wire.send({"type": "ran", "batches": len(todo)}, flush=True)

    def _rows(self, session: DatasetSession, layer: Dict[str, Any], start: int, stop: int) -> np.ndarray:
        t = session.kept.get(layer["id"])
        if t is None:
            raise UserError("dataset", f"the forward did not make pass {layer['label']} (pass {layer['id']})",
                            "the model's graph changed; this is a bug in torchlens's graph check, please report it")
        if t.dim() == 0 or t.shape[0] != stop - start:
            raise UserError("dataset", f"{layer['label']} has shape {tuple(t.shape)} for a batch of {stop - start} "
                            "stimuli: its first dimension is not the batch",
                            "select passes whose first dimension is the batch (a layer after a flatten of the "
                            "whole batch, or a model constant, has none)")
        return to_rows(t, layer)

    def _graph_changed(self, batch, ids: List[int], index: int, diff: str) -> UserError:
        """Name the stimulus that changed the graph: each of the batch's rows run alone."""
        hint = ("a dataset's rows must all come from one graph; this model's graph depends on its input (a "
                "dynamic model), so run the stimuli that take another path as a dataset of their own, or "
                "extract them one by one")
        for i in range(batch.inputs.shape[0]):
            alone = self._forward(batch.inputs[i:i + 1], ids, self.loaded.seed + index)
            why = first_difference(self._reference_alone(ids), alone.signature)
            if why:
                row = batch.start + i
                return UserError("dataset", f"stimulus {self.stimuli.ids[row]} (row {row}) changes the model's "
                                 f"graph: {why}", hint)
        return UserError("dataset", f"the batch of rows {batch.start}..{batch.stop - 1} changes the model's graph "
                         f"(no stimulus alone does): {diff}", hint)

    def _reference_alone(self, ids: List[int]) -> List[List[Any]]:
        """The graph of the first stimulus alone: what a one-stimulus forward is compared with."""
        if not hasattr(self, "_alone"):
            first = next(iter_batches(self.stimuli, [(0, 1)], 0, True))
            self._alone = self._forward(first.inputs, ids, self.loaded.seed).signature
        return self._alone

    # dataset_compare ------------------------------------------------------------------------------

    def compare(self, msg: Dict[str, Any]) -> None:
        """Each item: the array `key` of an extract run's npz (one stimulus) against row `row` of a
        layer's .npy, after the same pooling, flattening and cast. Tolerance (docs/dataset.md):
        max |a - b| <= rtol * max(1, max |b|), rtol 1e-4, or 4e-3 when the rows are float16."""
        results = []
        for item in msg["items"]:
            layer = item["layer"]
            with np.load(item["npz"], allow_pickle=False) as npz:
                ref = to_rows(torch.from_numpy(np.array(npz[item["key"]])), layer)[0]
            saved = np.load(item["file"], mmap_mode="r")[item["row"]]
            diff, scale = row_difference(saved, ref)
            rtol = 4e-3 if np.dtype(layer["descr"]).itemsize == 2 else 1e-4
            results.append({"row": item["row"], "label": layer["label"], "max_abs": diff, "scale": scale,
                            "ok": diff <= rtol * scale, "rtol": rtol})
        self.wire.send({"type": "compared", "results": results}, flush=True)
