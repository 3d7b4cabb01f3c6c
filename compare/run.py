"""``python -m compare.run``: load (or create) the shared weights, check per-sample gradient agreement."""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from compare.spec import DEFAULT_LOSS, LOSSES, make_batch
from compare.weights import WeightsError, init_weights, load_weights, save_weights

log = logging.getLogger("compare.run")


@dataclass(frozen=True)
class Config:
    weights: Path | None
    out: Path
    batch_size: int
    seed: int
    loss: str
    device: str | None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m compare.run", description=__doc__)
    p.add_argument("--weights", type=Path, help="safetensors weights file (default: create the seed-0 file in --out)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: results/)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch")
    p.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    a = p.parse_args(argv)
    return Config(a.weights, a.out, a.batch_size, a.seed, a.loss, a.device)


def resolve_weights(cfg: Config) -> dict:
    if cfg.weights is not None:
        return load_weights(cfg.weights)
    path = cfg.out / "weights_seed0.safetensors"
    if not path.exists():
        save_weights(path, init_weights(0))
        log.info("created the seed-0 weights file at %s", path)
    else:
        log.info("using existing weights file %s", path)
    return load_weights(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    try:
        weights = resolve_weights(cfg)
    except WeightsError as err:
        log.error("%s", err)
        return 2
    from compare.agreement import run_agreement

    x, y = make_batch(cfg.batch_size, cfg.seed)
    report = run_agreement(weights, x, y, loss=cfg.loss, device=cfg.device)
    print(report.format_table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
