"""The torch-free half: every module outside training/, evaluation/, export/ and models/ imports, and the
server starts, on an install without torch (a user who only predicts or serves installs none)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_PACKAGES = ("training", "evaluation", "export", "models")
STDLIB_ONLY_IN_TORCH_PACKAGES = ("cifar10_classifier.training.recipes",)  # the CLI lists recipes with it

CHECK = f"""
import importlib, pkgutil, sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed (this test hides it)")

sys.meta_path.insert(0, NoTorch())
import cifar10_classifier
torch_free = [
    module.name
    for module in pkgutil.walk_packages(cifar10_classifier.__path__, "cifar10_classifier.")
    if module.name.split(".")[1] not in {TORCH_PACKAGES!r} and not module.name.endswith("__main__")
] + {list(STDLIB_ONLY_IN_TORCH_PACKAGES)!r}
for name in torch_free:
    importlib.import_module(name)
from cifar10_classifier.cli import build_parser
from cifar10_classifier.serve.app import create_app

build_parser().parse_args(["serve", "--port", "0"])
create_app()
assert "torch" not in sys.modules
print(len(torch_free))
"""


def test_the_torch_free_half_imports_and_serves_without_torch():
    completed = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert int(completed.stdout.strip()) >= 25  # data/, serve/, cli/, preprocess, inference, ...
