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


CLIENT_CHECK = """
import sys

HIDDEN = ("torch", "numpy", "PIL", "onnxruntime", "fastapi", "starlette", "pydantic", "uvicorn", "orjson")

class Hidden:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ImportError(f"{name} is not installed (this test hides it)")

sys.meta_path.insert(0, Hidden())
from cifar10_classifier.client import Client, ClientError

try:
    Client(sys.argv[1]).predict(b"image bytes")  # nothing listens there: the whole request path runs
except ClientError as error:
    assert error.code == "connection_failed", error
assert not [name for name in sys.modules if name.split(".")[0] in HIDDEN]
print("ok")
"""


def test_the_client_needs_httpx_only():
    """No numpy, no image or ONNX library, nothing of the server: `pip install httpx` is enough to call one."""
    from support import free_port

    url = f"http://127.0.0.1:{free_port()}"
    completed = subprocess.run(
        [sys.executable, "-c", CLIENT_CHECK, url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok"
