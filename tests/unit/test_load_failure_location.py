"""A failed load's record names where in the model's own files it failed (file and line).

The exceptions are real: ``code/inference.py`` imported by ``load_user_module`` as a worker
imports it, and a ``model_fn`` called from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scorer.errors import UserCodeError
from scorer.inference.user_module import load_user_module
from scorer.serving.handler_service import _where_in_model, _with_location

# each test imports a model's code/inference.py: undo what that adds to sys.modules/sys.path
pytestmark = pytest.mark.usefixtures("restore_imports")


def _model(tmp_path: Path, script: str, helper: str | None = None) -> Path:
    code = tmp_path / "model" / "code"
    code.mkdir(parents=True)
    (code / "inference.py").write_text(script)
    if helper is not None:
        (code / "helper.py").write_text(helper)
    return tmp_path / "model"


def _import_error(model_dir: Path) -> UserCodeError:
    with pytest.raises(UserCodeError) as raised:
        load_user_module(model_dir / "code", "inference.py")
    return raised.value


def test_a_syntax_error_names_its_file_and_line(tmp_path: Path) -> None:
    model_dir = _model(tmp_path, "import json\n\ndef predict_fn(data, model)\n    return data\n")
    error = _import_error(model_dir)
    assert _where_in_model(error, model_dir) == "code/inference.py, line 3"
    message = _with_location(error.message, error, model_dir)
    assert message.startswith("code/inference.py failed to import: SyntaxError")
    assert message.endswith("; at code/inference.py, line 3")


def test_a_missing_name_at_import_names_its_line(tmp_path: Path) -> None:
    model_dir = _model(tmp_path, "import json\nVERSION = undefined_name\n")
    error = _import_error(model_dir)
    assert "NameError" in error.message
    assert _where_in_model(error, model_dir) == "code/inference.py, line 2"


def test_an_error_in_a_sibling_module_names_that_module(tmp_path: Path) -> None:
    model_dir = _model(tmp_path, "import helper\n", helper="x = 1\ny = (\n")
    error = _import_error(model_dir)
    assert _where_in_model(error, model_dir) == "code/helper.py, line 2"


def test_a_failing_model_fn_names_the_line_that_raised(tmp_path: Path) -> None:
    script = "def model_fn(model_dir):\n    weights = {}\n    return weights['missing']\n"
    model_dir = _model(tmp_path, script)
    module = load_user_module(model_dir / "code", "inference.py")
    assert module is not None
    with pytest.raises(KeyError) as raised:
        module.model_fn(str(model_dir))
    assert _where_in_model(raised.value, model_dir) == "code/inference.py, line 3"


def test_an_error_outside_the_model_files_has_no_location(tmp_path: Path) -> None:
    model_dir = _model(tmp_path, "x = 1\n")
    with pytest.raises(ZeroDivisionError) as raised:
        _ = 1 / 0
    assert _where_in_model(raised.value, model_dir) is None
    assert _with_location("ZeroDivisionError: x", raised.value, model_dir) == (
        "ZeroDivisionError: x"
    )
