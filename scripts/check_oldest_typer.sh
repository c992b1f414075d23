#!/usr/bin/env bash
# The command-line tests against the oldest typer that pyproject.toml allows (and the click that pip
# resolves for it): a throwaway venv holds only that typer, and sees every other package of .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
oldest=$(sed -n 's/.*"typer>=\([0-9.]*\),.*/\1/p' pyproject.toml)
base=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
venv=${TMPDIR:-/tmp}/moduseg-oldest-typer
rm -rf "$venv"
"$base" -m venv "$venv"
"$venv/bin/python" -m pip install -q "typer==$oldest"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$main_site')" > "$site/zz_moduseg_venv.pth"
"$venv/bin/python" -c "import typer, importlib.metadata as m; assert typer.__file__.startswith('$venv'), typer.__file__; print('typer', m.version('typer'), 'click', m.version('click'))"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_bad_input.py tests/test_cli.py -k "not console_script"
rm -rf "$venv"
