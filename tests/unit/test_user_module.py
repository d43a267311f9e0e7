"""scorer.inference.user_module: importing code/inference.py and validating its hooks up front."""

from __future__ import annotations

import sys
import textwrap
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scorer.errors import UserCodeError
from scorer.inference.user_module import (
    BASE_ARITY,
    HOOK_NAMES,
    load_user_module,
    make_hook,
    user_hooks,
)


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def write_code(root: Path, source: str, name: str = "inference.py") -> Path:
    code = root / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))
    return code


def module_with(**functions: Callable[..., Any]) -> types.ModuleType:
    module = types.ModuleType("fake_user_module")
    for name, fn in functions.items():
        setattr(module, name, fn)
    return module


# --- load_user_module ---------------------------------------------------------------------------


def test_missing_script_is_none(tmp_path: Path) -> None:
    assert load_user_module(tmp_path / "code", "inference.py") is None
    (tmp_path / "code").mkdir()
    assert load_user_module(tmp_path / "code", "inference.py") is None


def test_script_is_imported_with_its_functions(tmp_path: Path) -> None:
    code = write_code(tmp_path, "def model_fn(model_dir):\n    return 'loaded:' + model_dir\n")
    module = load_user_module(code, "inference.py")
    assert module is not None
    assert module.model_fn("x") == "loaded:x"
    assert module.__name__.startswith("scorer_user_inference_")
    assert sys.modules[module.__name__] is module


def test_other_program_names_are_honoured(tmp_path: Path) -> None:
    code = write_code(tmp_path, "VALUE = 7\n", name="serve.py")
    assert load_user_module(code, "inference.py") is None
    module = load_user_module(code, "serve.py")
    assert module is not None and module.VALUE == 7


def test_script_can_import_its_sibling_modules(tmp_path: Path) -> None:
    helper = f"helper_{uuid.uuid4().hex}"
    code = write_code(tmp_path, "ANSWER = 42\n", name=f"{helper}.py")
    write_code(tmp_path, f"from {helper} import ANSWER\n")
    module = load_user_module(code, "inference.py")
    assert module is not None and module.ANSWER == 42
    assert str(code) in sys.path


def test_two_models_with_the_same_script_name_stay_separate(tmp_path: Path) -> None:
    first = write_code(tmp_path / "a", "WHO = 'a'\n")
    second = write_code(tmp_path / "b", "WHO = 'b'\n")
    a, b = load_user_module(first, "inference.py"), load_user_module(second, "inference.py")
    assert a is not None and b is not None
    assert (a.WHO, b.WHO) == ("a", "b")
    assert a.__name__ != b.__name__


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("raise RuntimeError('weights are corrupt on purpose')\n",
         "RuntimeError: weights are corrupt on purpose"),
        ("1 / 0\n", "ZeroDivisionError: division by zero"),
        ("import no_such_package_for_scorer_tests\n",
         "ModuleNotFoundError: No module named 'no_such_package_for_scorer_tests'"),
        ("def model_fn(:\n", "SyntaxError"),
    ],
)  # fmt: skip
def test_import_failure_is_a_user_code_error_naming_the_exception(
    tmp_path: Path, source: str, needle: str
) -> None:
    code = write_code(tmp_path, source)
    with pytest.raises(UserCodeError) as info:
        load_user_module(code, "inference.py")
    assert info.value.message.startswith("code/inference.py failed to import: ")
    assert needle in info.value.message
    assert info.value.status_code == 500
    assert not [m for m in sys.modules if m.startswith("scorer_user_") and "inference" in m]


# --- user_hooks ---------------------------------------------------------------------------------


def test_no_module_means_no_hooks() -> None:
    assert user_hooks(None) == {}


def test_only_defined_callables_become_hooks() -> None:
    module = module_with(model_fn=lambda model_dir: None)
    module.input_fn = "not callable"  # type: ignore[attr-defined]
    hooks = user_hooks(module)
    assert set(hooks) == {"model_fn"}


def test_all_four_chain_hooks_are_picked_up() -> None:
    module = module_with(
        model_fn=lambda d: d,
        input_fn=lambda b, c: b,
        predict_fn=lambda d, m: d,
        output_fn=lambda p, a: p,
    )
    assert set(user_hooks(module)) == {"model_fn", "input_fn", "predict_fn", "output_fn"}


@pytest.mark.parametrize("other", ["input_fn", "predict_fn", "output_fn"])
def test_transform_fn_with_another_hook_is_refused(other: str) -> None:
    fns: dict[str, Callable[..., Any]] = {
        "transform_fn": lambda m, d, c, a: d,
        "input_fn": lambda b, c: b,
        "predict_fn": lambda d, m: d,
        "output_fn": lambda p, a: p,
    }
    module = module_with(transform_fn=fns["transform_fn"], **{other: fns[other]})
    with pytest.raises(UserCodeError) as info:
        user_hooks(module)
    assert "transform_fn" in info.value.message
    assert other in info.value.message


def test_transform_fn_with_model_fn_is_fine() -> None:
    hooks = user_hooks(module_with(model_fn=lambda d: d, transform_fn=lambda m, d, c, a: d))
    assert set(hooks) == {"model_fn", "transform_fn"}


def test_hook_tables_agree() -> None:
    assert set(HOOK_NAMES) == set(BASE_ARITY)
    assert BASE_ARITY == {
        "model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4,
    }  # fmt: skip


# --- arity: who gets the request context ----------------------------------------------------------


def input_two(body, content_type):
    return ("two", body, content_type)


def input_three(body, content_type, ctx):
    return ("three", body, content_type, ctx)


def input_named_context(body, content_type, context=None):
    return ("named", body, content_type, context)


def input_varargs(*args):
    return ("varargs", *args)


def input_two_with_kwargs(body, content_type, **kwargs):
    return ("kwargs", body, content_type, kwargs)


@pytest.mark.parametrize(
    ("fn", "takes_context", "expected"),
    [
        (input_two, False, ("two", b"x", "t")),
        (input_three, True, ("three", b"x", "t", "CTX")),
        (input_named_context, True, ("named", b"x", "t", "CTX")),
        (input_varargs, True, ("varargs", b"x", "t", "CTX")),
        (input_two_with_kwargs, False, ("kwargs", b"x", "t", {})),
    ],
)
def test_hook_gets_the_context_only_when_it_asks(
    fn: Callable[..., Any], takes_context: bool, expected: tuple[Any, ...]
) -> None:
    hook = make_hook("input_fn", fn)
    assert hook.takes_context is takes_context
    assert hook(b"x", "t", context="CTX") == expected


def test_keyword_only_context_is_detected() -> None:
    def input_fn(body, content_type, *, context=None):
        return context

    assert make_hook("input_fn", input_fn).takes_context is True


def test_keyword_only_context_is_passed_by_keyword() -> None:
    def input_fn(body, content_type, *, context=None):
        return context

    assert make_hook("input_fn", input_fn)(b"x", "t", context="CTX") == "CTX"


@pytest.mark.parametrize(
    ("name", "fn", "takes_context"),
    [
        ("model_fn", lambda model_dir: None, False),
        ("model_fn", lambda model_dir, context: None, True),
        ("predict_fn", lambda data, model: None, False),
        ("predict_fn", lambda data, model, context: None, True),
        ("output_fn", lambda prediction, accept: None, False),
        ("output_fn", lambda prediction, accept, ctx: None, True),
        ("transform_fn", lambda model, data, content_type, accept: None, False),
        ("transform_fn", lambda model, data, content_type, accept, context: None, True),
        ("input_fn", lambda body, content_type, extra=1, more=2: None, True),
    ],
)
def test_arity_per_hook(name: str, fn: Callable[..., Any], takes_context: bool) -> None:
    assert make_hook(name, fn).takes_context is takes_context


@pytest.mark.parametrize(
    ("name", "fn", "got"),
    [
        ("input_fn", lambda body: None, 1),
        ("input_fn", lambda a, b, c, d: None, 4),
        ("model_fn", lambda: None, 0),
        ("predict_fn", lambda data: None, 1),
        ("transform_fn", lambda model, data, content_type: None, 3),
        ("output_fn", lambda a, b, c, d, e: None, 5),
    ],
)
def test_wrong_arity_is_a_user_code_error(name: str, fn: Callable[..., Any], got: int) -> None:
    with pytest.raises(UserCodeError) as info:
        make_hook(name, fn)
    assert info.value.message == (
        f"{name} must take {BASE_ARITY[name]} arguments (plus an optional context), got {got}"
    )


def test_wrong_arity_in_a_script_fails_at_validation(tmp_path: Path) -> None:
    code = write_code(tmp_path, "def predict_fn(data):\n    return data\n")
    with pytest.raises(UserCodeError, match="predict_fn must take 2 arguments"):
        user_hooks(load_user_module(code, "inference.py"))


def test_callable_without_signature_gets_no_context() -> None:
    hook = make_hook("input_fn", dict)  # builtins may have no inspectable signature
    assert hook.takes_context is False
