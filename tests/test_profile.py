"""compare.benchmark.profile runs on both frameworks and prints the stages the README's analysis cites (B=2, one repeat)."""
from __future__ import annotations

import pytest

from compare.frameworks import FRAMEWORKS
from compare.benchmark.profile import SUBSETS, main


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reference_profile_prints_every_stage(framework: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--framework", framework, "--method", "reference", "--batch-size", "2", "--repeats", "1",
                 "--top", "3"]) == 0
    out = capsys.readouterr().out
    for stage in ("forward only", *SUBSETS):
        line = next(line for line in out.splitlines() if line.strip().startswith(stage))
        wall, cpu = (float(v) for v in line.split()[-2:])
        assert wall > 0 and cpu >= 0


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(SystemExit):
        main(["--framework", "jax", "--method", "nope"])
