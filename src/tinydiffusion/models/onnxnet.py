"""A network as an ONNX graph and back: ``to_onnx(module)`` (bytes, dynamic batch) and ``OnnxNetwork``, which runs
such a graph through onnxruntime with the model protocol ``model(x_t, t, context) -> output``.

The graph has the inputs ``x_t`` ``[B, C, H, W]`` float32, ``t`` ``[B]`` int64 and ``context`` ``[B, D]`` float32
(``D = max(context width, 1)``; all zeros is the null context) and the output ``out``: the network's raw prediction
(eps, x0 or v as the model card says), so every sampler, guidance closure and conversion works on it unchanged.
onnxruntime and onnx are the ``onnx`` extra, imported where used.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..vocab import BACKENDS
from ..errors import UsageError, bad_value

ONNX_FILE = "model.onnx"
INPUTS, OUTPUT = ("x_t", "t", "context"), "out"
OPSET = 17  # GroupNorm is exported as InstanceNormalization, which every onnxruntime (web too) runs
PARITY_TOLERANCE = 1e-3  # max abs difference of outputs of order 1 allowed between model.onnx and the weights
INSTALL = "pip install 'tinydiffusion[onnx]'"
WEIGHTLESS = "this network runs in onnxruntime (a folder holding model.onnx loads that way on the CPU)"


def to_onnx(module: nn.Module, channels: int, image_size: int, context_width: int) -> bytes:
    """``module`` (any network of the model protocol) as an ONNX graph with a dynamic batch size, traced on a
    copy in the standard memory format (the loaded network keeps its channels-last weights)."""
    net = copy.deepcopy(module).to("cpu", memory_format=torch.contiguous_format).float().eval()
    g = torch.Generator().manual_seed(0)
    example = (torch.randn(2, channels, image_size, image_size, generator=g), torch.tensor([1, 0]),
               torch.randn(2, max(context_width, 1), generator=g))
    batch = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes: checked below
        torch.onnx.export(net, example, buffer, dynamo=False, input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={name: batch for name in (*INPUTS, OUTPUT)}, opset_version=OPSET,
                          do_constant_folding=True)
    return buffer.getvalue()


def onnxruntime_module():
    """The ``onnxruntime`` module, or a ``UsageError`` naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"running a network with onnxruntime needs the onnx extra ({INSTALL})") from None
    return onnxruntime


class OnnxNetwork(nn.Module):
    """An ONNX graph (a file or its bytes) run by onnxruntime on the CPU, shaped like the network it came from.

    It holds no weights of its own; one empty parameter tells the pipeline its device (the CPU). Outputs come
    back on the input's device and dtype, so a sampler cannot tell it from the PyTorch network.
    """

    def __init__(self, graph: bytes | str | Path, threads: int | None = None):
        super().__init__()
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as many as PyTorch uses
        options.log_severity_level = 3  # errors only
        # no busy-waiting between calls: the spinning threads would take the cores from PyTorch's sampler steps
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(graph) if isinstance(graph, Path) else graph
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # a truncated or foreign file: onnxruntime says which
            where = f"ONNX graph {graph}" if isinstance(graph, (str, Path)) else "the ONNX graph"
            raise UsageError(f"{where} could not be loaded by onnxruntime: {str(e)[:300]}") from None
        shapes = {i.name: i.shape for i in self.session.get_inputs()}
        if not {"x_t", "t"} <= set(shapes):
            raise UsageError(f"the ONNX graph takes inputs {sorted(shapes)}; expected x_t, t and context (a graph "
                             f"written by tinydiffusion export)")
        self.context_width = int(shapes["context"][1]) if "context" in shapes else 1
        self.takes_context = "context" in shapes  # an unconditional network's graph may drop the unused input
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)

    def state_dict(self, *args: Any, **kwargs: Any):
        raise UsageError(f"{WEIGHTLESS}: it has no weights to read; load the model with backend='torch'")

    def __deepcopy__(self, memo: dict) -> "OnnxNetwork":
        raise UsageError(f"{WEIGHTLESS}: it cannot be copied into a trainable network; load the model with "
                         f"backend='torch'")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B = x_t.shape[0]
        t = t.reshape(-1).expand(B) if t.numel() == 1 else t
        feeds = {"x_t": x_t.detach().to("cpu", torch.float32).contiguous().numpy(),
                 "t": t.detach().to("cpu", torch.int64).contiguous().numpy()}
        if self.takes_context:
            c = torch.zeros(B, self.context_width) if context is None else context.detach().to("cpu", torch.float32)
            feeds["context"] = c.contiguous().numpy()
        out = self.session.run([OUTPUT], feeds)[0]  # [B, C, H, W]
        return torch.from_numpy(out).to(device=x_t.device, dtype=x_t.dtype)


def check_backend(backend: Any, device: str | torch.device) -> str:
    """``backend`` checked: one of ``BACKENDS``, and ``onnx`` only on the CPU."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise bad_value("backend", backend, f"one of {', '.join(BACKENDS)}")
    if backend == "onnx" and torch.device(device).type != "cpu":
        raise bad_value("backend", backend, f"'torch' on device {device} (onnxruntime runs the network on the CPU "
                                            f"here)")
    return backend


def onnx_network(path: Path, module: nn.Module, config: dict[str, Any], backend: str = "auto",
                 device: str | torch.device = "cpu") -> nn.Module:
    """The network ``load`` hands to the pipeline: ``module`` itself for the PyTorch backend, else an
    ``OnnxNetwork`` of the folder's ``model.onnx`` (checked against ``module``'s outputs) or, without one, of
    ``module`` converted in memory. ``auto`` means onnx when the folder holds ``model.onnx``, the device is the
    CPU and onnxruntime is installed; otherwise PyTorch."""
    backend = check_backend(backend, device)
    graph = Path(path) / ONNX_FILE
    if backend == "auto":
        usable = graph.is_file() and torch.device(device).type == "cpu"
        try:
            backend = "onnx" if usable and onnxruntime_module() else "torch"
        except UsageError:  # not installed: the weights beside the graph give the same images to 2/255
            backend = "torch"
    if backend == "torch":
        return module
    m = config["model"]
    if graph.is_file():
        network = OnnxNetwork(graph)
        difference = output_difference(module, network, m["channels"], m["image_size"], m["context_width"])
        if not difference <= PARITY_TOLERANCE:
            raise UsageError(f"{graph} does not compute the network of {path / 'model.safetensors'} (outputs differ "
                             f"by {difference:.3g}, allowed {PARITY_TOLERANCE:g}); export it again with tinydiffusion "
                             f"export")
        return network
    return OnnxNetwork(to_onnx(module, m["channels"], m["image_size"], m["context_width"]))


@torch.no_grad()
def output_difference(a: nn.Module, b: nn.Module, channels: int, image_size: int, context_width: int,
                      batch: int = 2, seed: int = 0) -> float:
    """Max abs difference of two networks' outputs on one seeded batch (noisy inputs at spread-out steps, random
    contexts); a graph that does not fit the shapes counts as infinitely different."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, image_size, image_size, generator=g)
    t = torch.randint(0, 500, (batch,), generator=g)
    c = torch.rand(batch, max(context_width, 1), generator=g)
    try:
        out_b = b(x, t, c)
    except Exception:  # noqa: BLE001 - onnxruntime's shape errors: a graph of another network
        return float("inf")
    return float((a(x, t, c).float() - out_b.float()).abs().max())
