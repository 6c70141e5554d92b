"""Validation by replay: re-run the captured forward pass and check every saved pass against it.

For each op as it happens, `ValidationSession` (session.py) calls the same function again with the
same non-tensor arguments, feeding it the parents' arrays read from the run's activations.npz
(live values for parents that were not saved), and compares the result with the op's saved array.
Random ops are replayed with the RNG state from just before the original call. Then each parent
is perturbed: the child must change (a missing or wrong edge shows up here), except where a rule
in `EXEMPT` says the op need not depend on that argument's values.

Sources are checked too: inputs, buffers and constants against the live tensors, outputs against
the value the model returned.

The modules, one idea each:
- session.py: the validation session, which overrides the capture session's two hooks
- exemptions.py: the rules that exempt a parent from the dependence check
- arrays.py: reading the run's activations.npz, and a saved array as a tensor again
- compare.py: comparing arrays within the dtype's tolerance, and exactly
- perturb.py: other values for a parent, for the dependence check
- arguments.py: a call's arguments by record position, for a replay
- rng.py: torch's RNG state around a call
- isolation.py: replays of extension kernels in a forked child
- completeness.py: the count of torch calls that checks the capture saw them all
"""
