"""Build hook: compile the hot-path modules with mypyc into the wheel (opt-in).

Enabled only with HATCH_BUILD_HOOK_ENABLE_CUSTOM=true (the Makefile's
`compiled` target sets it); a normal or editable install stays pure Python.
The C build happens in a temporary directory, never in the source tree, and
the wheel keeps the .py files next to the extensions (tracebacks, inspection).
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).parent


class MypycBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        if shutil.which(os.environ.get("CC", "cc")) is None:
            raise RuntimeError("mypyc build: no C compiler (cc); install the pure package instead")
        hot_path = runpy.run_path(str(ROOT / "src/knightwatch/build.py"))["HOT_PATH"]
        sources = [f"src/{m.replace('.', '/')}.py" for m in hot_path]
        self._tmp = tempfile.TemporaryDirectory(prefix="knightwatch-mypyc-")
        out = Path(self._tmp.name)
        built = _compile(sources, out)
        for path in built:
            rel = path.relative_to(out / "lib")
            build_data["force_include"][str(path)] = str(rel)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        print(f"mypyc: compiled {len(sources)} modules: {', '.join(hot_path)}", file=sys.stderr)

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()


def _compile(sources: list[str], out: Path) -> list[Path]:
    """Run mypyc and the C compiler; return the extension files built under out/lib."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exts = mypycify(
            sources,
            opt_level="3",
            target_dir=str(out / "mypyc"),
        )
        dist = Distribution({"name": "knightwatch-mypyc", "ext_modules": exts})
        cmd = dist.get_command_obj("build_ext")
        cmd.build_lib = str(out / "lib")  # type: ignore[attr-defined]
        cmd.build_temp = str(out / "tmp")  # type: ignore[attr-defined]
        cmd.inplace = False  # type: ignore[attr-defined]
        cmd.ensure_finalized()
        cmd.run()
    finally:
        os.chdir(cwd)
    return [p for p in (out / "lib").rglob("*") if p.is_file()]
