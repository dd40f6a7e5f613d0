"""Named ConvRNN configurations, registered with the model registry.

Every builder takes `(input_shape, num_outputs, **options)`; the accepted option
names are the fields of `ModelOptions` (graph, unrolling, readout) and of
`models.cells.CellConfig` (cell hyperparameters), with each configuration's own
defaults, and `models.build` rejects any other name. `width` scales every layer's
channels and the memory depth (for tiny test models).

- `rgc_shallow`: the 6-layer ConvRNN of Nayebi et al. 2018 (5 conv layers + readout),
  NeurIPS-2018 RGC cells in conv3-conv5, biological unrolling for 16 steps, the
  image shown for 12.
- `rgc_intermediate`: the median model of Nayebi, Sagastuy-Brena, Bear et al. 2022
  (10 conv layers + readout): median RGC cells in conv4-conv10 with the searched
  hyperparameters of the released model, feedback edges conv8->conv5, conv9->conv6,
  conv10->conv7, conv7->conv6, conv10->conv9 (1x1), 17 steps, image off after 12.
- `ugrnn_intermediate`: the released UGRNN model's depth and widths, UGRNN cells in
  conv4-conv10, no feedback, and its residual block (3x3 convolution of the cell's
  output plus the layer's input, then ELU) in conv2-conv10.
- `convrnn_glyph`: small and fast, for 28x28 glyph tasks trained with SGD 0.1:
  conv1-conv2 feedforward (32, 64 channels), RGC cells in conv3 (7x7) and conv4
  (4x4, 64 channels, memory depth 16), feedback conv4->conv3, BatchNorm, `full`
  unrolling for 3 steps. Its RGC input gates are 2 (1 - s(.)), i.e. 1 at
  initialization, so the image passes undimmed through both cells (with the
  paper's 1 - s(.) it learns about half as fast in the first 100 steps); the
  self-gates are 1x1. An SGD step (batch 20, 1 thread) costs about 2.3x that of
  conv4 on a shared 2-core CPU (`python -m benchmarks.convrnn_throughput --threads 1`).
- `convrnn_atari`: an encoder for 84x84 Atari frames (Nature-DQN convolutions,
  RGC cells in conv2 and conv3 with tanh updates, feedback conv3->conv2, `full`
  unrolling); its head is Linear + ReLU features of size `num_outputs`; use `step`
  for acting.
- `<name>_ff` for each: the feedforward twin (cell "none", no feedback edges,
  `full` unrolling for one step), with the same parameter names as its ConvRNN.

The readout of the published models is global average pooling and a linear layer
(rgc_shallow's released readout is a 2x2 convolution then average pooling).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import nn

from leap_convrnn.errors import UserError
from models.cells import CellConfig
from models.convrnn import INPUT, ConvRNN, GraphSpec, LayerSpec
from models.registry import register


@dataclass(frozen=True)
class ModelOptions:
    """Graph, unrolling and readout options of a named ConvRNN."""

    cell: str = "rgc"
    """Cell of the recurrent layers (a name in models.cells.CELLS; "none": feedforward)."""
    unroll: str = "biological"
    """"biological" (one step per edge) or "full" (every layer every step)."""
    times: int = 17
    """Time steps unrolled for an image input (a sequence input sets its own)."""
    image_off: int | None = 12
    """Steps the image is shown before the gray frame (None: shown every step)."""
    gray: float = 0.5
    """Pixel value of the gray frame."""
    readout: str | int = "last"
    """"last", "all" (per-step logits) or a step index."""
    feedback: bool = True
    """Keep the graph's long-range feedback edges."""
    width: float = 1.0
    """Multiplier of every layer's channels and of the memory depth."""
    norm: str = "none"
    """Normalization after each layer's convolution: "none", "batch" or "layer"."""
    activation: str = "elu"
    """Activation after each layer's convolution (before the cell)."""
    head: str = "logits"
    """"logits" (average pool + Linear) or "features" (flatten + Linear + ReLU)."""
    feedback_kernel: int = 1
    """Kernel of the convolutions that project feedback and skip inputs."""
    steps_per_frame: int = 1
    """Internal time steps per `step` call (stateful use)."""
    channels_last: bool = True
    """Keep activations in NHWC memory layout (faster convolutions on CPU and GPU)."""
    feedback_edges: str | None = None
    """Replace the graph's feedback edges: "a>b,c>d" (source > target), "" for none
    (None: the graph's own)."""
    init: str = "released"
    """Initializers: "released" (those of the released TF models: variance scaling for
    the layers, each cell its own, see `ConvRNN.init_released`) or "torch" (PyTorch's
    defaults)."""


OPTION_NAMES = tuple(f.name for f in fields(ModelOptions)) + tuple(
    f.name for f in fields(CellConfig)
)


@dataclass(frozen=True)
class NamedConfig:
    """A graph, the option defaults that go with it, and the published parameter count."""

    name: str
    graph: GraphSpec
    defaults: Mapping[str, Any]
    published_params: int | None = None
    """The released model's parameter count: counted from its released graph
    (rgc_shallow, ugrnn_intermediate; tests/models/test_convrnn.py writes the count out)
    or the paper's figure (rgc_intermediate, about 15M)."""
    reference_input: tuple[int, int, int] = (3, 224, 224)
    """The input (C, H, W) the configuration is meant for (parameter counts use it)."""
    reference_outputs: int = 1000

    def options(self, overrides: Mapping[str, Any]) -> tuple[ModelOptions, CellConfig]:
        """Split defaults + overrides into the model and cell option records."""
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise UserError(
                f"unknown option {unknown[0]!r} for model {self.name!r}; "
                f"accepted: {', '.join(OPTION_NAMES)}"
            )
        merged = {**self.defaults, **overrides}
        model_names = {f.name for f in fields(ModelOptions)}
        model = ModelOptions(**{k: v for k, v in merged.items() if k in model_names})
        cell = CellConfig(**{k: v for k, v in merged.items() if k not in model_names})
        return model, cell

    def build(
        self, input_shape: tuple[int, int, int], num_outputs: int, overrides: Mapping[str, Any]
    ) -> ConvRNN:
        """The ConvRNN of this configuration for `input_shape` and `num_outputs`."""
        model, cell = self.options(overrides)
        if model.width <= 0:
            raise UserError(f"width must be > 0, got {model.width}")
        graph = self.graph
        if model.feedback_edges is not None:
            graph = with_feedback(graph, model.feedback_edges)
        if cell.cell_depth is not None:
            cell = replace(cell, cell_depth=max(1, round(cell.cell_depth * model.width)))
        return ConvRNN(
            graph.scaled(model.width),
            input_shape,
            num_outputs,
            cell=model.cell,
            cell_config=cell,
            unroll=model.unroll,
            times=model.times,
            image_off=model.image_off,
            gray=model.gray,
            readout=model.readout,
            feedback=model.feedback,
            norm=model.norm,
            activation_name=model.activation,
            head=model.head,
            feedback_kernel=model.feedback_kernel,
            steps_per_frame=model.steps_per_frame,
            channels_last=model.channels_last,
            init=model.init,
        )

    def twin(self) -> NamedConfig:
        """The feedforward twin: no cells, no feedback, one `full` step."""
        defaults = {
            **self.defaults,
            "cell": "none",
            "feedback": False,
            "unroll": "full",
            "times": 1,
            "image_off": None,
        }
        return replace(self, name=f"{self.name}_ff", defaults=defaults, published_params=None)

    def signature(self) -> inspect.Signature:
        """Builder signature: input_shape, num_outputs, then every option with its default."""
        model, cell = self.options({})
        values = {**{f.name: getattr(model, f.name) for f in fields(model)}}
        values.update({f.name: getattr(cell, f.name) for f in fields(cell)})
        keyword = inspect.Parameter.KEYWORD_ONLY
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Signature(
            [
                inspect.Parameter("input_shape", positional),
                inspect.Parameter("num_outputs", positional),
                *(inspect.Parameter(name, keyword, default=values[name]) for name in OPTION_NAMES),
            ]
        )


Builder = Callable[..., nn.Module]


def with_feedback(graph: GraphSpec, edges: str) -> GraphSpec:
    """`graph` with its feedback edges replaced by `edges` ("a>b,c>d"; "" or "none": none)."""
    parsed: list[tuple[str, str]] = []
    for item in edges.replace(" ", "").split(","):
        if item in ("", "none"):
            continue
        source, sep, target = item.partition(">")
        edge = (source, target)
        if not sep or not source or not target or not graph.is_feedback(edge):
            raise UserError(
                f"feedback edge {item!r} must be 'source>target' with the source at or after "
                "the target; nodes: " + ", ".join(layer.name for layer in graph.layers)
            )
        parsed.append(edge)
    return replace(graph, edges=graph.without_feedback().edges + tuple(parsed))


def with_options(config: NamedConfig) -> Callable[[Builder], Builder]:
    """Give a `(input_shape, num_outputs, **options)` builder the signature of `config`,
    so that `models.build` checks option names against it and reports them."""

    def decorate(fn: Builder) -> Builder:
        fn.__signature__ = config.signature()  # type: ignore[attr-defined]
        return fn

    return decorate


def _chain(names: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple(itertools.pairwise([INPUT, *names]))


def _graph(layers: list[LayerSpec], feedback: tuple[tuple[str, str], ...] = ()) -> GraphSpec:
    return GraphSpec(tuple(layers), _chain([layer.name for layer in layers]) + feedback)


RGC_SHALLOW = NamedConfig(
    name="rgc_shallow",
    graph=_graph(
        [
            LayerSpec("conv1", 64, kernel_size=7, stride=2, pool=2, recurrent=False),
            LayerSpec("conv2", 128, pool=2, recurrent=False),
            LayerSpec("conv3", 256, pool=2),
            LayerSpec("conv4", 256, pool=2),
            LayerSpec("conv5", 512, pool=2),
        ]
    ),
    defaults={"cell": "rgc", "times": 16, "image_off": 12},
    published_params=23_956_840,
)

MEDIAN_FEEDBACK = (
    ("conv8", "conv5"),
    ("conv9", "conv6"),
    ("conv10", "conv7"),
    ("conv7", "conv6"),
    ("conv10", "conv9"),
)

RGC_INTERMEDIATE = NamedConfig(
    name="rgc_intermediate",
    graph=_graph(
        [
            LayerSpec("conv1", 64, kernel_size=7, stride=2, pool=2, recurrent=False),
            LayerSpec("conv2", 128, recurrent=False),
            LayerSpec("conv3", 128, recurrent=False),
            LayerSpec("conv4", 128, pool=2),
            LayerSpec("conv5", 128),
            LayerSpec("conv6", 256, pool=2),
            LayerSpec("conv7", 256, pool=2),
            LayerSpec("conv8", 256),
            LayerSpec("conv9", 512),
            LayerSpec("conv10", 512, pool=2),
        ],
        MEDIAN_FEEDBACK,
    ),
    defaults={
        "cell": "rgc_median",
        "times": 17,
        "image_off": 12,
        "cell_depth": 64,
        "tau_kernel": 7,
        "gate_kernel": 7,
        "input_kernel": 2,
        "out_kernel": 3,
        "tau_offset": 0.9219348064291611,
        "tau_multiplier": -0.9219348064291611,
        "gate_offset": 0.7006566684988862,
        "gate_multiplier": -0.7006566684988862,
        "tau_activation": "sigmoid",
        "gate_activation": "tanh",
        "feedback_kernel": 1,
        "init_scale": 0.6393378386273998,
    },
    published_params=15_000_000,
)

UGRNN_INTERMEDIATE = NamedConfig(
    name="ugrnn_intermediate",
    graph=_graph(
        [
            LayerSpec("conv1", 64, kernel_size=7, stride=2, pool=2, recurrent=False),
            LayerSpec("conv2", 64, recurrent=False, residual=True),
            LayerSpec("conv3", 64, recurrent=False, residual=True),
            LayerSpec("conv4", 128, pool=2, residual=True),
            LayerSpec("conv5", 128, residual=True),
            LayerSpec("conv6", 256, pool=2, residual=True),
            LayerSpec("conv7", 256, pool=2, residual=True),
            LayerSpec("conv8", 512, residual=True),
            LayerSpec("conv9", 512, residual=True),
            LayerSpec("conv10", 512, pool=2, residual=True),
        ]
    ),
    defaults={"cell": "ugrnn", "times": 17, "image_off": 12},
    published_params=50_617_832,
)

CONVRNN_GLYPH = NamedConfig(
    name="convrnn_glyph",
    graph=_graph(
        [
            LayerSpec("conv1", 32, pool=2, recurrent=False),
            LayerSpec("conv2", 64, pool=2, recurrent=False),
            LayerSpec("conv3", 64, pool=2),
            LayerSpec("conv4", 64),
        ],
        (("conv4", "conv3"),),
    ),
    defaults={
        "cell": "rgc",
        "unroll": "full",
        "times": 3,
        "image_off": None,
        "norm": "batch",
        "cell_depth": 16,
        "input_kernel": 1,
        "tau_kernel": 1,
        "gate_kernel": 3,
        "gate_offset": 2.0,
        "gate_multiplier": -2.0,
    },
    reference_input=(1, 28, 28),
    reference_outputs=20,
)

CONVRNN_ATARI = NamedConfig(
    name="convrnn_atari",
    graph=_graph(
        [
            LayerSpec("conv1", 32, kernel_size=8, stride=4, padding=0, recurrent=False),
            LayerSpec("conv2", 64, kernel_size=4, stride=2, padding=0),
            LayerSpec("conv3", 64, kernel_size=3, padding=0),
        ],
        (("conv3", "conv2"),),
    ),
    defaults={
        "cell": "rgc",
        "unroll": "full",
        "times": 1,
        "image_off": None,
        "head": "features",
        "activation": "relu",
        "cell_depth": 32,
        # Not a released model: PyTorch's initializers. With the released ones, A2C on this
        # encoder diverges within 5 updates (RMSprop 7e-4 or 1e-4).
        "init": "torch",
        # Bounded cell updates: an agent's encoder carries its state over a whole episode
        # (thousands of steps), where the released elu lets the RGC memory integrate
        # without bound; with elu, A2C on ms_pacman diverged within 35 updates (RMSprop
        # 1e-4 or 7e-4), the state growing tenfold per update.
        "out_activation": "tanh",
        "cell_activation": "tanh",
    },
    reference_input=(4, 84, 84),
    reference_outputs=256,
)

NAMED: dict[str, NamedConfig] = {}
for _config in (RGC_SHALLOW, RGC_INTERMEDIATE, UGRNN_INTERMEDIATE, CONVRNN_GLYPH, CONVRNN_ATARI):
    NAMED[_config.name] = _config
    NAMED[f"{_config.name}_ff"] = _config.twin()


def _builder(name: str, doc: str) -> Builder:
    """Register the builder of the named configuration `name`."""
    config = NAMED[name]

    def build(input_shape: tuple[int, int, int], num_outputs: int, **options: Any) -> nn.Module:
        return config.build(input_shape, num_outputs, options)

    build.__name__ = f"build_{name}"
    build.__qualname__ = build.__name__
    build.__doc__ = doc
    return register(name)(with_options(config)(build))


build_rgc_shallow = _builder("rgc_shallow", "6-layer ConvRNN with NeurIPS-2018 RGC cells.")
build_rgc_intermediate = _builder(
    "rgc_intermediate", "The median 11-layer ConvRNN: median RGC cells and feedback edges."
)
build_ugrnn_intermediate = _builder("ugrnn_intermediate", "11-layer ConvRNN with UGRNN cells.")
build_convrnn_glyph = _builder("convrnn_glyph", "Small ConvRNN for 28x28 glyph tasks.")
build_convrnn_atari = _builder(
    "convrnn_atari", "ConvRNN encoder for 84x84 Atari frames (ReLU features)."
)
build_rgc_shallow_ff = _builder("rgc_shallow_ff", "Feedforward twin of rgc_shallow.")
build_rgc_intermediate_ff = _builder("rgc_intermediate_ff", "Feedforward twin of rgc_intermediate.")
build_ugrnn_intermediate_ff = _builder(
    "ugrnn_intermediate_ff", "Feedforward twin of ugrnn_intermediate."
)
build_convrnn_glyph_ff = _builder("convrnn_glyph_ff", "Feedforward twin of convrnn_glyph.")
build_convrnn_atari_ff = _builder("convrnn_atari_ff", "Feedforward twin of convrnn_atari.")


def parameter_counts() -> dict[str, dict[str, int | None]]:
    """Parameters of every named configuration at its reference input and output size,
    beside the published count (None: not published)."""
    counts: dict[str, dict[str, int | None]] = {}
    for name, config in NAMED.items():
        model = config.build(config.reference_input, config.reference_outputs, {})
        counts[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "published": config.published_params,
        }
    return counts
