"""Static checks of buildspec.yml (AWS CodeBuild): phases, ECR login, pushes, the artifact."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILDSPEC = ROOT / "buildspec.yml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(BUILDSPEC.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def commands(spec: dict[str, Any], phase: str) -> list[str]:
    found = spec["phases"][phase]["commands"]
    assert all(isinstance(c, str) for c in found)
    return found


def test_version_and_phases(spec: dict[str, Any]) -> None:
    assert str(spec["version"]) == "0.2"
    assert set(spec["phases"]) == {"install", "pre_build", "build", "post_build"}
    assert str(spec["phases"]["install"]["runtime-versions"]["python"]) == "3.11"


def test_ecr_login_uses_get_login_password(spec: dict[str, Any]) -> None:
    pre = "\n".join(commands(spec, "pre_build"))
    login = [c for c in commands(spec, "pre_build") if "get-login-password" in c]
    assert len(login) == 1
    assert re.search(r"aws ecr get-login-password .*\| docker login .*--password-stdin", login[0])
    for variable in ("AWS_ACCOUNT_ID", "AWS_DEFAULT_REGION", "IMAGE_REPO_NAME"):
        assert variable in pre
    assert "CODEBUILD_RESOLVED_SOURCE_VERSION" in pre


def test_build_runs_the_tests_before_the_image(spec: dict[str, Any]) -> None:
    build = commands(spec, "build")
    tests = next(i for i, c in enumerate(build) if c.strip() == "scripts/test")
    docker = next(i for i, c in enumerate(build) if c.strip().startswith("docker build"))
    assert tests < docker
    image = build[docker]
    assert '--cache-from "$REPOSITORY_URI:latest"' in image
    assert '--tag "$IMAGE_URI"' in image and '--tag "$REPOSITORY_URI:latest"' in image
    assert spec["phases"]["build"].get("on-failure") == "ABORT"


def test_post_build_pushes_both_tags_and_writes_image_detail(spec: dict[str, Any]) -> None:
    post = commands(spec, "post_build")
    assert any("CODEBUILD_BUILD_SUCCEEDING" in c for c in post), "pushes after a failed build"
    assert 'docker push "$IMAGE_URI"' in post
    assert 'docker push "$REPOSITORY_URI:latest"' in post
    detail = next(c for c in post if "imageDetail.json" in c)
    assert '"ImageURI"' in detail and "$IMAGE_URI" in detail
    assert "imageDetail.json" in spec["artifacts"]["files"]


def test_image_tag_is_the_commit(spec: dict[str, Any]) -> None:
    pre = "\n".join(commands(spec, "pre_build"))
    assert re.search(r'IMAGE_URI="\$REPOSITORY_URI:\$IMAGE_TAG"', pre)
    assert re.search(r"IMAGE_TAG=.*\$COMMIT", pre)


def test_no_hard_coded_account_id_or_credentials() -> None:
    text = BUILDSPEC.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\d)\d{12}(?!\d)", text), "hard-coded AWS account id"
    assert not re.search(r"AKIA[0-9A-Z]{16}", text), "hard-coded access key"
    assert "dkr.ecr." in text and "${AWS_ACCOUNT_ID" in text
