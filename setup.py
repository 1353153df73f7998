"""The label lists live in the repository's top-level dicts/ (where notebooks that attach the repository find
them); a built wheel carries them inside the package as interrogator/dicts/, found through the package."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithDicts(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "interrogator" / "dicts"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(Path(__file__).resolve().parent.joinpath("dicts").iterdir()):
            if source.is_file():
                self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildWithDicts})
