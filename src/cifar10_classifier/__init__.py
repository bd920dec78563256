"""cifar10-classifier: train, quantize and serve a CIFAR-10 image classifier."""

__version__ = "0.1.0"

# The official CIFAR-10 class order: label i of the official batches is CLASSES[i].
CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
