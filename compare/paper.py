"""``python -m compare.paper`` (``scripts/reproduce.sh``): re-make every committed result under ``paper/``.

  python -m compare.paper --list            every output: its name, directory, commands and rough duration
  python -m compare.paper                   re-make them all (many hours on 2 cores), then the figures and main.tex
  python -m compare.paper --only NAME[,NAME...]   those outputs only
  python -m compare.paper --quick           a small subset (minutes) that exercises the wiring end to end
  python -m compare.paper --root DIR        write under DIR instead of paper/ (the commands' paths follow)

It refuses to start, in one line, on a tree with uncommitted changes to tracked files, so every output records a
clean commit (``compare.provenance``: command, commit, versions, CPU, date). Outputs run one after another, each
command as an argument list (no shell); an output that fails stops the run with its name, and the outputs made
before it stay. Durations are those of the committed runs on the 2-core Intel Xeon of ``paper/cpu``.
Outputs that a single environment at one commit cannot re-make (the side-by-side of two releases, the
before/after of a code change) are listed with the reason and skipped.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from compare.provenance import ROOT, git_commit

PY = "python"  # replaced by the running interpreter


@dataclass(frozen=True)
class Output:
    """One committed result: ``path`` (under the root) and the commands that make it ("{root}" in an argument is
    the output root), about ``minutes`` on 2 cores. ``skip``: why one environment at one commit cannot re-make it."""

    name: str
    path: str
    commands: tuple[tuple[str, ...], ...]
    minutes: float
    quick: bool = False
    skip: str = ""
    replaces: tuple[str, ...] = ()  # files a command appends to: removed first, so the output is this run's alone


def _run(*args: str) -> tuple[str, ...]:
    return (PY, "-m", "compare.run", *args)


def _train(out: str, *args: str) -> tuple[str, ...]:
    return (PY, "-m", "compare.train", *args, "--out", "{root}/" + out)


def _script(name: str, *args: str) -> tuple[str, ...]:
    return (PY, f"scripts/{name}", *args)


OUTPUTS: tuple[Output, ...] = (
    Output("cpu", "cpu", (_run("--full", "--out", "{root}/cpu"),), 40),
    Output("cpu-train", "cpu/train", (_train("cpu/train"),), 6),
    Output("cpu-train-nm0", "cpu/train_nm0", (_train("cpu/train_nm0", "--steps", "30", "--noise-multiplier", "0"),),
           2, quick=True),
    Output("cpu-train-f64", "cpu/train_f64_bk", (
        _train("cpu/train_f64_bk", "--steps", "20", "--dtype", "float64", "--clipping", "bk"),
        _train("cpu/train_f64_materialize", "--steps", "20", "--dtype", "float64", "--clipping", "materialize")), 4),
    Output("cpu-train-devices", "cpu/train_f64_devices1", (
        _train("cpu/train_f64_devices1", "--devices", "1", "--steps", "5", "--dtype", "float64"),
        _train("cpu/train_f64_devices2", "--devices", "2", "--steps", "5", "--dtype", "float64")), 3),
    Output("cpu-dp-8192", "cpu-dp-8192", (_run("--batch-sizes", "8192", "--methods", "dp_bk", "--no-agreement",
                                               "--repeats", "3", "--min-seconds", "0", "--timeout", "900", "--out",
                                               "{root}/cpu-dp-8192"),), 8),
    Output("cpu-devices", "cpu-devices", tuple(
        _run("--devices", n, "--methods", "dist_per_sample,dist_dp_bk", "--batch-sizes", "64", "--no-agreement",
             "--out", f"{{root}}/cpu-devices/n{n}") for n in ("1", "2")), 2),
    Output("cpu-distributed", "cpu-distributed", (
        _script("cpu_distributed.py", "--models", "logreg,ffnn,embed,seed_cnn,mnist_cnn,cifar10_cnn,lstm,transformer,"
                "wrn16_4", "--batch-sizes", "64,256", "--steps", "6", "--timeout", "900", "--out",
                "{root}/cpu-distributed/results.json"),), 60),
    Output("cpu-suite", "cpu-suite", (
        _run("--suite", "fast-dpsgd", "--agreement-only", "--out", "{root}/cpu-suite"),
        _run("--suite", "fast-dpsgd", "--agreement-file", "{root}/cpu-suite/agreement.json", "--out",
             "{root}/cpu-suite")), 32),
    Output("cpu-suite-paired", "cpu-suite-paired", (
        _run("--suite", "fast-dpsgd", "--model", "logreg,ffnn,embed,mnist_cnn,seed_cnn", "--batch-sizes", "64,256",
             "--no-agreement", "--out", "{root}/cpu-suite-paired"),), 30),
    Output("cpu-suite-breakdown", "cpu-suite/breakdown", tuple(
        _script("dp_breakdown.py", "--framework", fw, "--model", "embed,logreg,mnist_cnn,seed_cnn,cifar10_cnn",
                "--batch-size", "256", "--out", "{root}/cpu-suite/breakdown") for fw in ("torch", "jax")), 10),
    Output("cpu-suite-profiles", "cpu-suite/profiles", tuple(
        (PY, "-m", "compare.profile", "--framework", "jax", "--method", "per_layer", "--model", m, "--batch-size",
         "256", "--json", f"{{root}}/cpu-suite/profiles/jax_per_layer_{m}_B256.json")
        for m in ("cifar10_cnn", "embed", "mnist_cnn")), 5),
    Output("cpu-suite-embed", "cpu-suite-embed", (
        _run("--suite", "fast-dpsgd", "--model", "embed", "--agreement-file", "{root}/cpu-suite/agreement.json",
             "--out", "{root}/cpu-suite-embed"),), 3),
    Output("cpu-suite-seq", "cpu-suite-seq", (
        _run("--suite", "fast-dpsgd", "--model", "lstm,transformer", "--agreement-only", "--out",
             "{root}/cpu-suite-seq"),
        _run("--suite", "fast-dpsgd", "--model", "lstm,transformer", "--agreement-file",
             "{root}/cpu-suite-seq/agreement.json", "--out", "{root}/cpu-suite-seq")), 45),
    Output("cpu-suite-seq-breakdown", "cpu-suite-seq/breakdown", tuple(
        _script("dp_breakdown.py", "--framework", fw, "--model", "transformer,lstm", "--batch-size", "64", "--out",
                "{root}/cpu-suite-seq/breakdown") for fw in ("torch", "jax")), 6),
    Output("cpu-suite-seq-bk", "cpu-suite-seq-bk", (
        _run("--suite", "fast-dpsgd", "--model", "transformer", "--methods", "sgd,dp_bk", "--agreement-file",
             "{root}/cpu-suite-seq/agreement.json", "--out", "{root}/cpu-suite-seq-bk"),), 4),
    Output("cpu-suite-seq-goal", "cpu-suite-seq-goal", (
        _run("--suite", "fast-dpsgd", "--model", "transformer", "--methods", "sgd,dp_bk", "--batch-sizes", "64,256",
             "--repeats", "7", "--min-seconds", "5", "--agreement-file", "{root}/cpu-suite-seq/agreement.json",
             "--out", "{root}/cpu-suite-seq-goal"),), 5),
    Output("cpu-seq-panel", "cpu-seq-panel", (_script("seq_length_panel.py", "--out", "{root}/cpu-seq-panel"),), 30),
    Output("cpu-seq-panel-bk", "cpu-seq-panel-bk", (
        _script("seq_length_panel.py", "--methods", "sgd,dp_bk,dp_bk@gram,dp_bk@materialize", "--out",
                "{root}/cpu-seq-panel-bk"),), 30),
    Output("cpu-seq-panel-t128", "cpu-seq-panel-t128", (
        _script("seq_length_panel.py", "--seq-lens", "128", "--min-seconds", "8", "--out",
                "{root}/cpu-seq-panel-t128"),), 10),
    Output("cpu-seq-costmodel", "cpu-seq-costmodel", (_script("seq_cost_model.py", "--out",
                                                              "{root}/cpu-seq-costmodel"),), 15),
    Output("cpu-seq-costmodel-2t", "cpu-seq-costmodel-2t", (
        _script("seq_cost_model.py", "--threads", "2", "--points", "128:64", "--out",
                "{root}/cpu-seq-costmodel-2t"),), 5),
    Output("cpu-costmodel", "cpu-costmodel", (_script("conv_cost_model.py", "--out", "{root}/cpu-costmodel"),), 20),
    Output("cpu-lstm", "cpu-lstm", (_script("lstm_profile.py", "--json", "{root}/cpu-lstm/profile.json"),), 5),
    Output("cpu-bf16-precision", "cpu-bf16", (
        (PY, "-m", "compare.agreement.precision", "--out", "{root}/cpu-bf16", "--batch-size", "16"),), 150),
    Output("cpu-bf16-speed", "cpu-bf16", (
        _script("bf16_speed.py", "--model", "seed_cnn,mnist_cnn,embed", "--batch-size", "64", "--threads", "1",
                "--rounds", "7", "--out", "{root}/cpu-bf16"),), 40),
    Output("cpu-bf16-jax-ablation", "cpu-bf16", (
        _script("bf16_jax_ablation.py", "--model", "seed_cnn", "--batch-size", "16", "--out", "{root}/cpu-bf16"),), 15),
    Output("cpu-bf16-lstm-ablation", "cpu-bf16", (
        _script("bf16_lstm_ablation.py", "--batch-size", "16", "--out", "{root}/cpu-bf16"),), 15),
    Output("cpu-bf16-train", "cpu-bf16-train", tuple(
        _train(f"cpu-bf16-train/{dt}-seed{seed}", "--model", "mnist_cnn", "--dtype", dt, "--seed", seed)
        for dt in ("float32", "bfloat16") for seed in ("0", "1", "2")) + (
        _script("bf16_train_figure.py", "{root}/cpu-bf16-train"),), 60),
    Output("paired-demo", "paired-demo", (
        _script("paired_demo.py", "--model", "logreg", "--batch-size", "64", "--rounds", "200", "--out",
                "{root}/paired-demo"),), 8),
    Output("perf-embed-costmodel", "perf-embed", tuple(
        _script("embed_cost_model.py", "--framework", fw, "--threads", "1", "--out",
                f"{{root}}/perf-embed/costmodel-{fw}.json") for fw in ("torch", "jax")), 10),
    Output("perf-embed-steps", "perf-embed", tuple(
        _script("paired_dp.py", "--framework", fw, *threads, "--model", "embed", "--batch-sizes", "64,256",
                "--methods", "dp_bk,dp_ghost", "--rounds", "40", "--out", "{root}/perf-embed/steps.json")
        for threads in ((), ("--threads", "1")) for fw in ("torch", "jax")), 20, replaces=("perf-embed/steps.json",)),
    Output("perf-mnist", "perf-mnist", tuple(
        _script("conv_bk_routes.py", fw, model, b, rounds, "{root}/perf-mnist/conv_bk_routes.json")
        for fw, model, b, rounds in (("torch", "mnist_cnn", "256", "16"), ("jax", "mnist_cnn", "256", "16"),
                                     ("torch", "cifar10_cnn", "64", "8"), ("jax", "cifar10_cnn", "64", "8"))), 30,
           replaces=("perf-mnist/conv_bk_routes.json",)),
    Output("perf-sgd", "perf-sgd", tuple(
        _script("sgd_formulations.py", "--framework", fw, "--model", model, "--batch-sizes", sizes, "--rounds", "20",
                "--threads", "1", "--out", f"{{root}}/perf-sgd/{fw}.json")
        for fw in ("torch", "jax") for model, sizes in (("ffnn", "16,64"), ("lstm", "16,64"), ("transformer", "16"))),
        40, replaces=("perf-sgd/torch.json", "perf-sgd/jax.json")),
    Output("perf-lstm-after", "perf-lstm", tuple(
        _script("paired_dp.py", "--framework", fw, "--model", "lstm", "--batch-sizes", b, "--methods",
                "dp_bk,dp_ghost", "--rounds", "20", "--warmup", "2", "--threads", "1", "--out",
                f"{{root}}/perf-lstm/after-{fw}.json")
        for fw in ("torch", "jax") for b in ("64", "256")), 40,
        replaces=("perf-lstm/after-torch.json", "perf-lstm/after-jax.json")),
    Output("perf-lstm-before", "perf-lstm", (), 0,
           skip="the LSTM rule before the gate-input site: an older commit, not this one"),
    Output("cpu-contract-before-after", "cpu-contract-before-after", (), 0,
           skip="times the code before and after the contract refactoring: two commits, not one"),
    Output("perf-embed-before-after", "perf-embed", (), 0,
           skip="compares the code before and after a change: two commits, not one"),
    Output("versions", "versions", (), 0,
           skip="compares two releases of torch / jax: two environments, not the lock's one"),
    Output("figures", ".", ((PY, "-m", "compare.figures", "--latex-doc", "{root}"),), 15, quick=True),
)
BY_NAME: dict[str, Output] = {o.name: o for o in OUTPUTS}


def commands(output: Output, root: Path, python: str = sys.executable) -> list[list[str]]:
    """``output``'s commands with the root filled in and ``python`` (default: the running interpreter)."""
    return [[python if a == PY else a.replace("{root}", str(root)) for a in cmd] for cmd in output.commands]


def dirty(repo: Path) -> bool | None:
    """True when any tracked file (results and prose included) differs from HEAD in ``repo``; None when ``repo`` is
    not a git checkout."""
    commit = git_commit(repo, code_only=False)
    return None if commit is None else commit.endswith("-dirty")


def listing(root: Path) -> str:
    lines = []
    for o in OUTPUTS:
        head = f"{o.name:<26} {root / o.path}"
        if o.skip:
            lines.append(f"{head}  (not re-made: {o.skip})")
            continue
        lines.append(f"{head}  ~{o.minutes:g} min on 2 cores{'  [--quick]' if o.quick else ''}")
        lines += ["    " + " ".join(c) for c in commands(o, root, "python")]
    total = sum(o.minutes for o in OUTPUTS if not o.skip)
    lines.append(f"all: ~{total / 60:.1f} h on 2 cores; --quick: ~{sum(o.minutes for o in OUTPUTS if o.quick):g} min")
    return "\n".join(lines)


def select(only: str | None, quick: bool) -> list[Output]:
    """The outputs to make, in registry order; ``ValueError`` naming an unknown or a skipped name."""
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown output(s) {unknown}; --list shows them: {', '.join(BY_NAME)}")
        skipped = [n for n in names if BY_NAME[n].skip]
        if skipped:
            raise ValueError(f"{skipped[0]} cannot be re-made here: {BY_NAME[skipped[0]].skip}")
        return [o for o in OUTPUTS if o.name in names]
    return [o for o in OUTPUTS if not o.skip and (o.quick or not quick)]


def make(outputs: list[Output], root: Path) -> int:
    """Run each output's commands in the checkout's root, this checkout's packages first on the path (a script
    must not import an installed copy of another checkout)."""
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    for o in outputs:
        archive = root / o.path / "runs"
        had_archive = archive.exists()
        t0 = time.time()
        for name in o.replaces:
            (root / name).unlink(missing_ok=True)
        for cmd in commands(o, root):
            print(f"[{o.name}] {' '.join(cmd)}", flush=True)
            code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
            if code != 0:
                print(f"[{o.name}] failed (exit {code}); the outputs before it are kept", file=sys.stderr)
                return code
        if archive.exists() and not had_archive:  # the superseded run the command moved aside: git keeps it
            shutil.rmtree(archive)
        print(f"[{o.name}] done in {(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m compare.paper", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list every output, its commands and rough duration")
    p.add_argument("--only", metavar="NAME[,NAME...]", help="make these outputs only (names from --list)")
    p.add_argument("--quick", action="store_true", help="a small subset for a smoke test (minutes)")
    p.add_argument("--root", type=Path, default=Path("paper"), help="output root (default: paper)")
    a = p.parse_args(argv)
    if a.list:
        print(listing(a.root))
        return 0
    try:
        outputs = select(a.only, a.quick)
    except ValueError as err:
        print(f"compare.paper: {err}", file=sys.stderr)
        return 2
    state = dirty(ROOT)
    if state is None:
        print(f"compare.paper: {ROOT} is not a git checkout: outputs must record the commit that made them",
              file=sys.stderr)
        return 2
    if state:
        print("compare.paper: the tree has uncommitted changes to tracked files; commit or stash them first, so "
              "every output records a clean commit", file=sys.stderr)
        return 2
    # the commands run in the checkout's root: a relative --root given from there stays relative in the records
    root = a.root if not a.root.is_absolute() and Path.cwd().resolve() == ROOT else a.root.resolve()
    return make(outputs, root)


if __name__ == "__main__":
    sys.exit(main())
