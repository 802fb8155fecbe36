"""Run tf2onnx's CLI with a numpy>=2 shim (tf2onnx 1.17's tfjs path still calls np.product)."""
import sys

import numpy as np

if not hasattr(np, "product"):
    np.product = np.prod

from tf2onnx import convert  # noqa: E402

if __name__ == "__main__":
    sys.exit(convert.main())
