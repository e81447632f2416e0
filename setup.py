"""Build hook: ship the repository's ``configs/`` inside the package, as mmdet does.

Wheels get ``mmretinaface/.mim/configs`` (copied at build time), so configs
load by name from site-packages (``FaceInferencer('retinaface_mobilenet0.25_widerface')``,
``mmretinaface.get_config_path``). An editable install copies nothing: the
package finds the repository's ``configs/`` next to it. Metadata: pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/`` to ``mmretinaface/.mim/configs``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / 'mmretinaface' / '.mim' / 'configs'
        shutil.rmtree(target, ignore_errors=True)  # no stale configs from an older build
        shutil.copytree(ROOT / 'configs', target,
                        ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


setup(cmdclass={'build_py': BuildPyWithConfigs})
