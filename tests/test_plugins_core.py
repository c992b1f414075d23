"""The registry and get_component, with fake plugins registered and removed per test (core unit tests)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import moduseg_core as ms
from moduseg_core.contract import plugins
from moduseg_core.contract.options import Options
from moduseg_core.contract.types import Proposals


class FakeOptions(Options):
    size: int = 3
    device: str = "cpu"
    runtime_fields = frozenset({"device"})


class FakeProposer:
    def __init__(self, options):
        self.options = options

    def propose(self, image, *, image_id=None):
        h, w = image.shape[:2]
        return Proposals(np.ones((1, h, w), bool), np.ones(1, np.float32))


class FakePlugin:
    @ms.hookimpl
    def register_proposers(self, register):
        register("fake-tiles", FakeProposer, options=FakeOptions, summary="test", requires=("numpy",))
        register("needs-missing", FakeProposer, requires=("no_such_module_xyz",), extra="nothing")
        register("not-a-proposer", lambda options: object())


@pytest.fixture
def fake_plugin():
    plugins.register_plugin(FakePlugin(), "fake")
    yield
    plugins.unregister_plugin("fake")


def test_registered_component_builds_with_options(fake_plugin):
    proposer = ms.get_component("proposer", "fake-tiles", size=5)
    assert proposer.options.size == 5
    out = proposer.propose(np.zeros((4, 6, 3), np.uint8))
    assert out.masks.shape == (1, 4, 6)


def test_unregister_removes(fake_plugin):
    assert "fake-tiles" in {s.name for s in ms.list_components("proposer")}
    plugins.unregister_plugin("fake")
    assert "fake-tiles" not in {s.name for s in ms.list_components("proposer")}
    plugins.register_plugin(FakePlugin(), "fake")


def test_unknown_name_lists_available_and_closest(fake_plugin):
    with pytest.raises(ms.ModusegError) as info:
        ms.get_component("proposer", "fake-tile")
    message = str(info.value)
    assert "unknown proposer 'fake-tile'" in message and "did you mean 'fake-tiles'" in message
    assert "available proposers:" in message and "\n" not in message


def test_unknown_kind():
    with pytest.raises(ms.ModusegError, match="unknown component kind 'propser'.*did you mean 'proposer'"):
        ms.list_components("propser")


def test_unknown_option_names_allowed_keys(fake_plugin):
    with pytest.raises(ms.ModusegError, match=r"no option 'sise'; did you mean 'size'\? \(allowed: device, size\)"):
        ms.get_component("proposer", "fake-tiles", sise=2)


def test_wrong_option_type(fake_plugin):
    with pytest.raises(ms.ModusegError, match=r"option size='big' is invalid.*expected int"):
        ms.get_component("proposer", "fake-tiles", size="big")


def test_missing_requirement_gives_install_hint(fake_plugin):
    spec = plugins.get_spec("proposer", "needs-missing")
    assert not spec.importable and spec.missing_requirements() == ["no_such_module_xyz"]
    with pytest.raises(ms.ModusegError, match=r"needs no_such_module_xyz.*pip install 'moduseg\[nothing\]'"):
        ms.get_component("proposer", "needs-missing")


def test_factory_must_build_the_protocol(fake_plugin):
    with pytest.raises(ms.ModusegError, match="does not implement MaskProposer"):
        ms.get_component("proposer", "not-a-proposer")


def test_duplicate_names_are_refused(fake_plugin):
    plugins.register_plugin(FakePlugin(), "fake-again")
    try:
        with pytest.raises(ms.ModusegError, match="registered twice"):
            ms.list_components()
    finally:
        plugins.unregister_plugin("fake-again")


def test_runtime_fields_leave_identity():
    assert FakeOptions(size=2, device="cuda").identity() == {"size": 2}


def test_hooks_are_all_documented():
    from pathlib import Path

    from moduseg_core.contract import hookspecs

    docs = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert len(hooks) == len(plugins.KINDS)
    for name in hooks:
        assert f"`{name}(register)`" in docs, f"hook {name} is not documented in docs/plugins.md"


def test_load_plugins_env_restricts_entry_points():
    code = (
        "import moduseg_core as ms;"
        "print(sorted({s.entry_point for s in ms.list_components()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"MODUSEG_LOAD_PLUGINS": "purifiers,aggregators", "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['aggregators', 'purifiers']"


def test_block_plugins_env_removes_named_entry_points(only_plugins, monkeypatch):
    everything = {s.entry_point for s in ms.list_components()}
    assert everything, "no entry points installed"
    blocked = sorted(everything)[0]
    monkeypatch.setenv("MODUSEG_BLOCK_PLUGINS", f" {blocked} ,no-such-plugin")
    monkeypatch.delenv("MODUSEG_LOAD_PLUGINS", raising=False)
    plugins.reset()
    try:
        left = {s.entry_point for s in ms.list_components()}
        assert left == everything - {blocked}
        assert blocked not in plugins.loaded_plugins()
    finally:
        monkeypatch.delenv("MODUSEG_BLOCK_PLUGINS")
        plugins.reset()
    assert {s.entry_point for s in ms.list_components()} == everything


def test_reset_reads_the_environment_again(only_plugins):
    only_plugins("")
    assert ms.list_components() == []
    assert plugins.loaded_plugins() == {}


def test_hooks_are_called_through_pluggy(fake_plugin):
    calls: list[str] = []
    undo = plugins.plugin_manager().add_hookcall_monitoring(
        lambda hook_name, impls, kwargs: calls.append(hook_name), lambda outcome, hook_name, impls, kwargs: None
    )
    try:
        plugins.register_plugin(object(), "nothing")  # clears the registry
        assert "fake-tiles" in {s.name for s in ms.list_components("proposer")}
    finally:
        undo()
        plugins.unregister_plugin("nothing")
    assert "register_proposers" in calls
