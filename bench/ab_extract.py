"""Interleaved A/B of `torchlens extract` under variants of the environment or of the CLI, the way
the figures of the speed work in CHANGELOG.md and wire.py were taken.

    python3 bench/ab_extract.py MODEL_FILE RUNS NAME:[K=V,...] NAME:[K=V,...] ...

Each variant is `name:` followed by environment settings (`TORCHLENS_AGENT_WRITER=normal`), where
`CLI=path/to/bin/torchlens.js` runs another checkout's CLI (a `git worktree` of the commit before),
and `ARGS=--layers conv2d_1_1` adds arguments to that variant's extract (split at spaces; ARGS
must come last, since the settings are split at commas).
Every round runs each variant once, in an order rotated by one each round: on a VM the second of two
back-to-back extractions is often the slower whichever it is (fresh page-cache pages cost the host's
page faults, `bench/page_cache_write.py`), so a fixed order favours the first variant. Prints the
median (min-max) of `forward_ms`, `saved_ms` and `agent_cpu_ms` (the CPU all the agent's threads
used over saved_ms: on a noisy VM a steadier sign of the agent's own cost than the times) per variant.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    model, runs = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    variants = []
    for arg in sys.argv[3:]:
        name, _, settings = arg.partition(":")
        settings, _, extra = settings.partition("ARGS=")
        env = dict(kv.split("=", 1) for kv in settings.split(",") if kv)
        variants.append((name, env, extra.split()))
    results = {name: [] for name, _, _ in variants}
    out = os.path.join(tempfile.mkdtemp(prefix="torchlens-ab-"), "run")
    try:
        for r in range(runs):
            for name, env, extra in variants[r % len(variants):] + variants[:r % len(variants)]:
                shutil.rmtree(out, ignore_errors=True)
                cli = env.get("CLI", os.path.join(ROOT, "bin", "torchlens.js"))
                done = subprocess.run(["node", cli, "extract", model, "-o", out, "--json", *extra], cwd=ROOT,
                                      env={**os.environ, **env}, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name}: extract exited {done.returncode}: {done.stderr[-2000:]}")
                d = json.loads(done.stdout)
                results[name].append((d["forward_ms"], d["saved_ms"], d.get("agent_cpu_ms")))
    finally:
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    for name, rows in results.items():
        cells = []
        cpu = [c for _, _, c in rows if c is not None]
        for what, values in (("forward", [r[0] for r in rows]), ("saved", [r[1] for r in rows]),
                             ("agent cpu", cpu)):
            if not values:  # an older CLI or agent: no agent_cpu_ms
                continue
            cells.append(f"{what} {statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f}) ms")
        print(f"{name:12s} " + "  ".join(cells))


if __name__ == "__main__":
    main()
