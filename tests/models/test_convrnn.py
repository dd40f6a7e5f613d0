"""The ConvRNN graph, its unrollings, the named configurations and meta-learning fitness."""

from __future__ import annotations

import math

import learn2learn as l2l
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import models
from leap_convrnn.errors import UserError
from models.cells import CELLS, CellConfig
from models.convrnn import ConvRNN, GraphSpec, LayerSpec
from models.convrnn_configs import NAMED, parameter_counts
from models.state import detach_state

TINY = {"width": 1 / 16}  # 4-32 channels instead of 64-512
SHAPE = (2, 12, 12)


def small_graph() -> GraphSpec:
    """Three layers, a skip edge c1->c3 and feedback edges c3->c2 and c3->c1."""
    return GraphSpec(
        layers=(
            LayerSpec("c1", 4, pool=2, recurrent=False),
            LayerSpec("c2", 4, pool=2),
            LayerSpec("c3", 5),
        ),
        edges=(
            ("input", "c1"),
            ("c1", "c2"),
            ("c2", "c3"),
            ("c1", "c3"),
            ("c3", "c2"),
            ("c3", "c1"),
        ),
    )


def small(cell: str = "rgc", seed: int = 0, **options) -> ConvRNN:
    torch.manual_seed(seed)
    options.setdefault("cell_config", CellConfig(cell_depth=3))
    return ConvRNN(small_graph(), SHAPE, 3, cell=cell, **options).double()


def images(n: int = 2, shape=SHAPE, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)).double()


# --- registry and options ---------------------------------------------------------------


def test_every_named_configuration_and_its_twin_is_registered():
    for name in ("rgc_shallow", "rgc_intermediate", "ugrnn_intermediate"):
        assert name in models.MODELS and f"{name}_ff" in models.MODELS
    for name in ("convrnn_glyph", "convrnn_atari"):
        assert name in models.MODELS and f"{name}_ff" in models.MODELS


def test_options_are_checked_against_the_builder_signature():
    with pytest.raises(UserError, match=r"unknown option 'gate_ofset'.*gate_offset"):
        models.build("rgc_intermediate", (3, 64, 64), 10, gate_ofset=0.5)
    model = models.build("convrnn_glyph", (1, 28, 28), 5, cell="ugrnn", times=2, tau_kernel=5)
    assert isinstance(model.layers["conv3"].cell, CELLS.get("ugrnn"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"cell": "lstmm"}, "unknown cell 'lstmm'"),
        ({"unroll": "sideways"}, r"unknown unroll mode 'sideways'; accepted: biological, full"),
        ({"readout": "middle"}, "unknown readout 'middle'"),
        ({"readout": 5}, "readout step 5 is not below times=3"),
        ({"norm": "instance"}, "unknown norm 'instance'"),
        ({"head": "pooled"}, "unknown head 'pooled'"),
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"width": 0}, "width must be > 0"),
    ],
)
def test_bad_option_values_are_user_errors(options, match):
    with pytest.raises(UserError, match=match):
        models.build("convrnn_glyph", (1, 28, 28), 5, **options)


def test_wrong_input_is_a_user_error_naming_the_built_shape():
    model = models.build("convrnn_glyph", (1, 28, 28), 5)
    with pytest.raises(UserError, match=r"\(2, 3, 28, 28\).*\(1, 28, 28\)"):
        model(torch.zeros(2, 3, 28, 28))
    with pytest.raises(UserError, match=r"\(2, 1, 32, 32\).*\(1, 28, 28\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(UserError, match=r"images .* or sequences"):
        model(torch.zeros(28, 28))
    with pytest.raises(UserError, match="too small"):
        models.build("convrnn_atari", (4, 6, 6), 5)


def test_graph_errors_are_user_errors():
    layers = (LayerSpec("a", 2), LayerSpec("b", 2))
    with pytest.raises(UserError, match="unknown node 'z'"):
        ConvRNN(GraphSpec(layers, (("input", "a"), ("a", "b"), ("z", "b"))), (1, 8, 8), 2)
    with pytest.raises(UserError, match="no feedforward input"):
        ConvRNN(GraphSpec(layers, (("input", "a"), ("b", "a"))), (1, 8, 8), 2)
    with pytest.raises(UserError, match="self edge"):
        ConvRNN(GraphSpec(layers, (("input", "a"), ("a", "b"), ("b", "b"))), (1, 8, 8), 2)


def test_rgc_intermediate_parameter_count_is_near_the_published_15m():
    counts = parameter_counts()
    ours, published = counts["rgc_intermediate"]["params"], counts["rgc_intermediate"]["published"]
    assert published == 15_000_000
    assert abs(ours - published) / published < 0.05
    assert counts["rgc_intermediate_ff"]["params"] < ours


def _conv(k: int, i: int, o: int, bias: bool = True) -> int:
    return k * k * i * o + (o if bias else 0)


def test_released_parameter_counts_written_out_from_the_released_graphs():
    """The released rgc_shallow and ugrnn_intermediate, counted by hand from their graph
    files; ours differ only by the documented terms (our cells' biases, our readout)."""
    layers = [(3, 64, 7), (64, 128, 3), (128, 256, 3), (256, 256, 3), (256, 512, 3)]
    rgc = sum(_conv(k, i, o) for i, o, k in layers)
    # per RGC layer: input_to_cell, cell tau, cell gate, out tau, out gate (C x C, 3x3, no
    # bias in the released _conv) and residual_to_out_gate (Cin x C, 3x3)
    rgc += sum(5 * 9 * o * o + 9 * i * o for i, o, _ in layers[2:])
    rgc += _conv(2, 512, 1000)  # the released readout: a 2x2 convolution
    assert rgc == NAMED["rgc_shallow"].published_params
    counts = parameter_counts()
    cell_biases = 5 * (256 + 256 + 512)  # from_h, from_c (2 each) and to_cell
    linear_head = 512 * 1000 + 1000
    assert counts["rgc_shallow"]["params"] == rgc - _conv(2, 512, 1000) + linear_head + cell_biases

    spec = [(3, 64, 7, False), (64, 64, 3, False), (64, 64, 3, False)]
    spec += [(64, 128, 3, True), (128, 128, 3, True), (128, 256, 3, True), (256, 256, 3, True)]
    spec += [(256, 512, 3, True), (512, 512, 3, True), (512, 512, 3, True)]
    ugrnn = 0
    for n, (i, o, k, cell) in enumerate(spec):
        ugrnn += _conv(k, i, o)
        if n == 0:
            continue
        if cell:  # one conv of [x, h] to [g, c], with bias
            ugrnn += _conv(3, 2 * o, 2 * o)
        ugrnn += _conv(3, o, o) + (i * o if i != o else 0)  # residual block, 1x1 projection
    ugrnn += 512 * 1000 + 1000
    assert ugrnn == NAMED["ugrnn_intermediate"].published_params
    extra_biases = 2 * sum(o for _, o, _, cell in spec if cell)  # from_x and from_h biases
    assert counts["ugrnn_intermediate"]["params"] == ugrnn + extra_biases


def test_median_model_layers_and_feedback_edges():
    model = models.build("rgc_intermediate", (3, 224, 224), 1000, **TINY)
    assert list(model.layers) == [f"conv{i}" for i in range(1, 11)]
    cells = [name for name, layer in model.layers.items() if layer.has_cell]
    assert cells == [f"conv{i}" for i in range(4, 11)]
    feedback = {(src, dst) for dst, layer in model.layers.items() for src in layer.extra}
    assert feedback == {
        ("conv8", "conv5"),
        ("conv9", "conv6"),
        ("conv10", "conv7"),
        ("conv7", "conv6"),
        ("conv10", "conv9"),
    }
    assert model.out_sizes[-1] == (4, 4)
    assert all(
        conv.kernel_size == (1, 1)
        for layer in model.layers.values()
        for conv in layer.extra.values()
    )


# --- shapes, readout, determinism ------------------------------------------------------


@pytest.mark.parametrize("size", [28, 64, 84, 224])
@pytest.mark.parametrize("name", ["rgc_shallow", "rgc_intermediate", "ugrnn_intermediate"])
def test_published_models_give_logits_for_every_input_size(name, size):
    model = models.build(name, (3, size, size), 7, times=3, **TINY)
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("size", [28, 64, 84, 224])
def test_small_models_give_outputs_for_every_input_size(size):
    glyph = models.build("convrnn_glyph", (1, size, size), 20, width=0.25)
    with torch.no_grad():
        assert glyph(torch.rand(3, 1, size, size)).shape == (3, 20)
    if size < 36:  # the Atari encoder's unpadded 8/4/3 convolutions need 36 pixels
        with pytest.raises(UserError, match="too small: layer 'conv3'"):
            models.build("convrnn_atari", (4, size, size), 16)
        return
    atari = models.build("convrnn_atari", (4, size, size), 16, width=0.25)
    with torch.no_grad():
        features = atari(torch.rand(3, 4, size, size))
    assert features.shape == (3, 16) and (features >= 0).all()


def test_per_step_and_chosen_step_readouts_agree_with_the_last():
    every = small(readout="all", times=6)
    x = images()
    logits = every(x)
    assert logits.shape == (2, 6, 3)
    last = small(readout="last", times=6)
    torch.testing.assert_close(last(x), logits[:, -1])
    chosen = small(readout=2, times=6)
    torch.testing.assert_close(chosen(x), logits[:, 2])
    sequence = every(x.unsqueeze(1).expand(-1, 4, -1, -1, -1))
    assert sequence.shape == (2, 4, 3)


def test_determinism_under_a_seed():
    torch.manual_seed(0)
    a = models.build("rgc_intermediate", (3, 64, 64), 5, times=12, **TINY)
    torch.manual_seed(0)
    b = models.build("rgc_intermediate", (3, 64, 64), 5, times=12, **TINY)
    x = torch.rand(2, 3, 64, 64)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    out = a(x)
    assert torch.equal(out, b(x))
    assert torch.equal(out, a(x)), "a forward call must not leak state into the next"


# --- unrolling --------------------------------------------------------------------------


def test_biological_unrolling_delays_the_image_by_one_step_per_edge():
    """Logits before step L (10 layers + the readout edge) do not depend on the image."""
    model = models.build("rgc_intermediate", (3, 32, 32), 4, readout="all", **TINY)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    lx, ly = model(x), model(y)
    assert lx.shape == (2, 17, 4)
    torch.testing.assert_close(lx[:, :10], ly[:, :10], rtol=0, atol=0)
    assert (lx[:, 10] - ly[:, 10]).abs().max() > 1e-6


def test_full_unrolling_reads_the_image_at_the_first_step():
    model = small(readout="all", unroll="full", times=3)
    x, y = images(seed=1), images(seed=2)
    assert (model(x)[:, 0] - model(y)[:, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("unroll", ["biological", "full"])
def test_presentation_schedule_is_the_image_then_gray(unroll):
    model = small(unroll=unroll, times=7, image_off=3, gray=0.25, readout="all")
    x = images()
    gray = torch.full_like(x, 0.25)
    movie = torch.stack([x, x, x, gray, gray, gray, gray], dim=1)
    torch.testing.assert_close(model(x), model(movie))
    constant = small(unroll=unroll, times=7, image_off=None, readout="all")
    torch.testing.assert_close(constant(x), constant(x.unsqueeze(1).expand(-1, 7, -1, -1, -1)))


def test_full_unrolling_matches_a_hand_unrolled_reference():
    """Layer by layer with feedback from the previous step, written out for the small graph."""
    model = small(unroll="full", times=3, readout="all", image_off=None)
    x = images()
    c1, c2, c3 = model.layers.values()

    def layer(lay, ff, extra, state):
        return lay(ff, extra, state, True)

    o3 = torch.zeros(2, 5, *model.out_sizes[2], dtype=torch.float64)  # not produced yet
    s2 = s3 = None
    expected = []
    for _ in range(3):
        n1, _ = layer(c1, x, {"c3": o3}, None)
        n2, s2 = layer(c2, n1, {"c3": o3}, s2)
        n3, s3 = layer(c3, n2, {"c1": n1}, s3)
        o3 = n3
        expected.append(model.head(o3))
    torch.testing.assert_close(model(x), torch.stack(expected, dim=1))


def test_feedforward_twin_equals_the_convrnn_with_its_cells_switched_off():
    name = "rgc_intermediate"
    torch.manual_seed(0)
    convrnn = models.build(name, (3, 64, 64), 6, **TINY)
    twin = models.build(f"{name}_ff", (3, 64, 64), 6, **TINY)
    missing, unexpected = twin.load_state_dict(convrnn.state_dict(), strict=False)
    assert missing == []
    assert unexpected and all(".cell." in k or ".extra." in k for k in unexpected)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = twin(x)
        assert (convrnn(x) - reference).abs().max() > 1e-6
        convrnn.set_recurrence(False)
        torch.testing.assert_close(convrnn(x), reference, rtol=0, atol=0)


def test_glyph_twin_with_batchnorm_matches_in_train_and_eval_mode():
    torch.manual_seed(0)
    convrnn = models.build("convrnn_glyph", (1, 28, 28), 5, width=0.25)
    twin = models.build("convrnn_glyph_ff", (1, 28, 28), 5, width=0.25)
    state = convrnn.state_dict()
    # The twin runs one step: its BatchNorm keeps the statistics of step 0 only.
    per_step = ("running_mean", "running_var", "num_batches_tracked")
    state = {k: v[:1] if k.endswith(per_step) else v for k, v in state.items()}
    twin.load_state_dict(state, strict=False)
    convrnn.set_recurrence(False)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(convrnn(x), twin(x), rtol=0, atol=0)
    convrnn.eval()
    twin.eval()
    torch.testing.assert_close(convrnn(x), twin(x), rtol=0, atol=0)


# --- gradients through time --------------------------------------------------------------


def assert_every_parameter_has_a_gradient(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_gradients_reach_every_parameter_of_the_median_model_through_time():
    model = models.build("rgc_intermediate", (3, 64, 64), 5, **TINY)
    model(torch.rand(2, 3, 64, 64)).logsumexp(1).sum().backward()
    assert_every_parameter_has_a_gradient(model)
    assert any(".extra.conv8" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("cell", [name for name in CELLS if name != "none"])
@pytest.mark.parametrize("unroll", ["biological", "full"])
def test_gradients_reach_every_parameter_for_every_cell(cell, unroll):
    model = small(cell, unroll=unroll, times=6, image_off=4)
    F.cross_entropy(model(images()), torch.tensor([0, 2])).backward()
    assert_every_parameter_has_a_gradient(model)


# --- stateful use -------------------------------------------------------------------------


@pytest.mark.parametrize("unroll", ["biological", "full"])
def test_step_by_step_equals_the_unrolled_sequence(unroll):
    model = small(unroll=unroll, readout="all")
    frames = torch.randn(2, 5, *SHAPE, dtype=torch.float64)
    unrolled = model(frames)
    state = model.initial_state(2)
    for t in range(5):
        out, state = model.step(frames[:, t], state)
        torch.testing.assert_close(out, unrolled[:, t])


def test_steps_per_frame_repeats_each_frame():
    model = small(unroll="full", readout="all", steps_per_frame=2)
    frames = torch.randn(2, 3, *SHAPE, dtype=torch.float64)
    unrolled = model(frames.repeat_interleave(2, dim=1))
    state = model.initial_state(2)
    for t in range(3):
        out, state = model.step(frames[:, t], state)
        torch.testing.assert_close(out, unrolled[:, 2 * t + 1])


def test_reset_state_restarts_only_finished_episodes():
    model = small(unroll="full")
    frames = torch.randn(4, 2, *SHAPE, dtype=torch.float64)
    state = model.initial_state(2)
    for t in range(4):
        _, state = model.step(frames[t], state)
    state = detach_state(model.reset_state(state, torch.tensor([True, False])))
    continued, _ = model.step(frames[0], state)
    fresh, _ = model.step(frames[0], model.initial_state(2))
    torch.testing.assert_close(continued[0], fresh[0])
    assert (continued[1] - fresh[1]).abs().max() > 1e-6
    leaves = [t for layer in state["cells"] for t in layer.values()] + state["outputs"]
    assert all(not t.requires_grad for t in leaves)


def test_atari_encoder_steps_with_relu_features():
    model = models.build("convrnn_atari", (4, 84, 84), 32, width=0.5)
    state = model.initial_state(3)
    frame = torch.rand(3, 4, 84, 84)
    features, state = model.step(frame, state)
    assert features.shape == (3, 32) and (features >= 0).all()
    torch.testing.assert_close(features, model(frame))
    with pytest.raises(UserError, match="step takes one frame"):
        model.step(frame.unsqueeze(1), state)


# --- meta-learning fitness ------------------------------------------------------------------


def test_functional_call_matches_the_module_and_differentiates_the_given_parameters():
    model = small(times=4)
    x = images()
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    out = functional_call(model, params, (x,))
    torch.testing.assert_close(out, model(x))
    shifted = {n: p + 0.01 for n, p in params.items()}
    assert (functional_call(model, shifted, (x,)) - out).abs().max() > 1e-6
    out.sum().backward()
    assert all(p.grad is not None for p in params.values())


def test_learn2learn_maml_clone_adapts_and_backpropagates_to_the_initialization():
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 28, 28), 4, width=0.25)
    maml = l2l.algorithms.MAML(model, lr=0.1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 4, (8,))
    learner = maml.clone()
    before = F.cross_entropy(learner(x), y)
    learner.adapt(before)
    after = F.cross_entropy(learner(x), y)
    assert after.item() < before.item()
    after.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    assert all(
        not torch.equal(a, b) for a, b in zip(learner.parameters(), model.parameters(), strict=True)
    )


def test_every_forward_starts_from_a_clean_state_after_stateful_use():
    model = small(unroll="full", times=3)
    x = images()
    first = model(x)
    state = model.initial_state(2)
    for _ in range(3):
        _, state = model.step(images(seed=5), state)
    torch.testing.assert_close(model(x), first, rtol=0, atol=0)


def test_reinitialize_redraws_every_parameter():
    model = models.build("rgc_intermediate", (3, 64, 64), 5, **TINY)
    again = models.build("rgc_intermediate", (3, 64, 64), 5, **TINY)
    models.reinitialize(model, seed=1)
    models.reinitialize(again, seed=1)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_named_configs_share_parameter_names_with_their_twins():
    for name, config in NAMED.items():
        if name.endswith("_ff"):
            continue
        shape = config.reference_input
        rnn = config.build(shape, 3, {"width": 0.125})
        twin = NAMED[f"{name}_ff"].build(shape, 3, {"width": 0.125})
        assert set(twin.state_dict()) <= set(rnn.state_dict())


@pytest.mark.slow
def test_glyph_convrnn_learns_a_20_way_glyph_task_with_sgd():
    """100 SGD steps (lr 0.1, batch 20) on a 20-way procedural glyph task: the training
    loss falls from ln 20 to a small fraction and held-out drawings are mostly right."""
    from tasks.glyphs import GlyphSpec, generate

    glyphs = generate(GlyphSpec(alphabets=1, min_characters=20, max_characters=20, seed=3))
    images = glyphs.alphabet(0)[:20]  # (20 characters, 20 drawers, 28, 28)
    train = images[:, :15].reshape(-1, 1, 28, 28)
    test = images[:, 15:].reshape(-1, 1, 28, 28)
    y_train = torch.arange(20).repeat_interleave(15)
    y_test = torch.arange(20).repeat_interleave(5)
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 28, 28), 20)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        index = torch.randint(0, len(train), (20,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(test).argmax(1) == y_test).float().mean().item()
    assert sum(losses[-10:]) / 10 < 0.3 < 2.5 < sum(losses[:5]) / 5
    assert accuracy > 0.8


def test_channels_last_option_sets_the_layout_without_changing_the_outputs():
    torch.manual_seed(0)
    nhwc = models.build("convrnn_glyph", (1, 28, 28), 5, width=0.25)
    torch.manual_seed(0)
    nchw = models.build("convrnn_glyph", (1, 28, 28), 5, width=0.25, channels_last=False)
    weight = nhwc.layers["conv3"].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert nchw.layers["conv3"].conv.weight.is_contiguous()
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["elu", "relu", "gelu"])
def test_feedforward_layer_equals_convolution_norm_activation_pool(act):
    """Written out: pool(act(norm(conv(x)))); monotone activations are applied after the
    pool internally, which must not change the values or the gradients."""
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 28, 28), 5, width=0.25, activation=act).double()
    layer = model.layers["conv2"]
    x = torch.randn(4, 8, 14, 14, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x, {}, None, True)
    z = layer.norm(F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1))
    reference = F.max_pool2d(getattr(F, act)(z), 2, ceil_mode=True)
    torch.testing.assert_close(out, reference)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), x)
    torch.testing.assert_close(grad, grad_ref)


# --- BatchNorm statistics per time step ----------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
def test_time_batchnorm_equals_one_batchnorm_per_step(momentum):
    """Each step's statistics (train and eval mode) are those of a separate BatchNorm2d
    fed only that step's inputs; steps past the last share the last one's. With
    momentum None (a cumulative average, as precise BatchNorm uses) each step counts its
    own batches."""
    from models.convrnn import TimeBatchNorm2d

    torch.manual_seed(0)
    norm = TimeBatchNorm2d(3, steps=4)
    norm.momentum = momentum
    references = [nn.BatchNorm2d(3, momentum=momentum) for _ in range(4)]
    for _ in range(3):
        for t in range(6):
            x = torch.randn(8, 3, 5, 5) * (t + 1) + t
            torch.testing.assert_close(norm(x, t), references[min(t, 3)](x))
    for t, reference in enumerate(references):
        torch.testing.assert_close(norm.running_mean[t], reference.running_mean)
        torch.testing.assert_close(norm.running_var[t], reference.running_var)
    norm.eval()
    for reference in references:
        reference.eval()
    x = torch.randn(8, 3, 5, 5)
    for t in range(6):
        torch.testing.assert_close(norm(x, t), references[min(t, 3)](x))


def test_recurrent_model_in_eval_mode_matches_train_mode_once_statistics_settle():
    """Feedback changes a layer's input distribution from step to step; after many
    training-mode passes over one batch, evaluation mode (running statistics) must give
    the training-mode (batch statistics) outputs. One running average shared by all steps
    would not."""
    torch.manual_seed(0)
    model = models.build("convrnn_glyph", (1, 28, 28), 5, width=0.25)
    x = torch.rand(64, 1, 28, 28)
    with torch.no_grad():
        for _ in range(200):
            train_mode = model(x)
        model.eval()
        eval_mode = model(x)
    torch.testing.assert_close(eval_mode, train_mode, rtol=0.05, atol=0.05)
    conv3 = model.layers["conv3"].norm
    assert conv3.running_mean.shape == (model.times, 16)
    assert not torch.allclose(conv3.running_mean[0], conv3.running_mean[-1], atol=1e-3)


def test_recalibrated_recurrent_model_in_eval_mode_matches_train_mode():
    """Held-out scoring re-estimates BatchNorm statistics on the task's images
    (`precise_batchnorm`): on those same images, evaluation mode must then give the
    training-mode outputs, for the recurrent model as for its feedforward twin (up to the
    unbiased variance BatchNorm keeps)."""
    from tasks.inner_loop import precise_batchnorm

    x = torch.rand(200, 1, 28, 28)
    for name in ("convrnn_glyph", "convrnn_glyph_ff"):
        torch.manual_seed(0)
        model = models.build(name, (1, 28, 28), 5, width=0.25)
        with torch.no_grad():
            for _ in range(3):  # move the weights' statistics away from the initial ones
                model(torch.rand(16, 1, 28, 28) * 3)
            train_mode = model(x)
            with precise_batchnorm(model, x):
                model.eval()
                eval_mode = model(x)
        torch.testing.assert_close(eval_mode, train_mode, rtol=1e-3, atol=1e-3, msg=name)


def test_named_configs_draw_the_released_initializers_and_reinitialize_keeps_them():
    """Layer convolutions: variance scaling (scale 1, fan in); median RGC cells: variance
    scaling with the released scale 0.639; readout: normal, std 0.01; biases 0."""
    torch.manual_seed(0)
    model = models.build("rgc_intermediate", (3, 64, 64), 1000, width=0.5)
    for _ in range(2):
        conv = model.layers["conv9"].conv.weight.detach()
        fan_in = conv.shape[1] * 9
        torch.testing.assert_close(conv.std().item(), (1 / fan_in) ** 0.5, rtol=0.05, atol=0)
        to_out = model.layers["conv9"].cell.to_out
        fan_in = to_out.weight.shape[1] * 9
        std = to_out.weight.detach().std().item()
        torch.testing.assert_close(std, (0.6393378386273998 / fan_in) ** 0.5, rtol=0.05, atol=0)
        assert to_out.bias.abs().sum() == 0
        head = model.head.linear.weight.detach()
        torch.testing.assert_close(head.std().item(), 0.01, rtol=0.05, atol=0)
        models.reinitialize(model, seed=1)
    torch_default = models.build("rgc_intermediate", (3, 64, 64), 1000, width=0.5, init="torch")
    assert torch_default.head.linear.weight.std().item() > 0.02
    with pytest.raises(UserError, match="unknown init 'tf'"):
        models.build("convrnn_glyph", (1, 28, 28), 5, init="tf")


@pytest.mark.slow
def test_compiled_model_equals_eager_in_outputs_and_gradients():
    """torch.compile (inductor), as the throughput benchmark uses it on CUDA, computes the
    same logits and gradients as eager mode (float32 tolerances)."""
    torch.manual_seed(0)
    model = ConvRNN(small_graph(), SHAPE, 3, cell="rgc", cell_config=CellConfig(cell_depth=3))
    x = torch.randn(2, *SHAPE)
    params = list(model.parameters())
    eager = model(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), params)
    compiled = torch.compile(model)(x)
    compiled_grads = torch.autograd.grad(compiled.square().sum(), params)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for ours, theirs in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _largest_state(model: torch.nn.Module, frames: int, scale: float) -> float:
    """Largest |value| in the cells' state after `frames` steps on one 36x36 stream,
    with every weight of `model` multiplied by `scale` (weights moved by training)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        state = model.initial_state(2)
        for _ in range(frames):
            _, state = model.step(torch.rand(2, 4, 36, 36), state)
    values = [t for cell in state["cells"] if cell for t in cell.values()]
    return max(float(t.abs().max()) for t in values)


def test_the_atari_encoder_state_stays_bounded_over_an_episode():
    """An agent's encoder carries its state over thousands of steps: the tanh cell
    updates of `convrnn_atari` keep it within [-1, 1] where the released elu lets the
    memory grow (and A2C diverged)."""
    bounded = models.build("convrnn_atari", (4, 36, 36), 16, width=0.25)
    assert _largest_state(bounded, frames=200, scale=3.0) <= 1.0
    released = models.build(
        "convrnn_atari", (4, 36, 36), 16, width=0.25, out_activation="elu", cell_activation="elu"
    )
    grown = _largest_state(released, frames=200, scale=3.0)
    assert math.isnan(grown) or grown > 10.0  # grows without bound, then overflows


# --- computation skipped exactly ------------------------------------------------------


def test_last_needed_steps_count_one_step_per_edge_back_from_the_readout():
    """rgc_intermediate, 17 steps: the readout reads conv10 at step 15, conv9 feeds it at
    14, ..., conv1 at 6 (feedback edges go down and add nothing); `full` needs every layer
    at the last step."""
    model = models.build("rgc_intermediate", (3, 32, 32), 4, **TINY)
    assert model.last_needed_steps(17) == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    glyph = models.build("convrnn_glyph", (1, 28, 28), 4)
    assert glyph.last_needed_steps(3) == [2, 2, 2, 2]
    side = small(unroll="full", times=4)  # c3 -> c1 feedback, c1 -> c3 skip
    assert side.last_needed_steps(4) == [3, 3, 3]


def test_skipped_steps_change_neither_logits_nor_gradients():
    """Readout "last" skips the steps that cannot reach it; "all" computes every step:
    the last logits and every gradient of a loss on them agree."""
    torch.manual_seed(0)
    last = models.build("rgc_intermediate", (3, 32, 32), 4, **TINY).double()
    every = models.build("rgc_intermediate", (3, 32, 32), 4, readout="all", **TINY).double()
    every.load_state_dict(last.state_dict())
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([0, 3])
    F.cross_entropy(last(x), y).backward()
    F.cross_entropy(every(x)[:, -1], y).backward()
    for (name, a), b in zip(last.named_parameters(), every.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14, msg=name)


def test_an_unchanged_layer_input_is_convolved_once():
    """convrnn_glyph: conv3's input (the feedforward conv2's output) is the same at all 3
    steps, so its convolution and the RGC's residual-to-out-gate term of it run once;
    conv4's input changes every step."""
    model = models.build("convrnn_glyph", (1, 28, 28), 4)
    calls: dict[str, int] = {}
    for name in ("conv3", "conv4"):
        layer = model.layers[name]
        for part, module in (("conv", layer.conv), ("from_r", layer.cell.from_r)):
            key = f"{name}.{part}"
            calls[key] = 0

            def count(*_, key=key):
                calls[key] += 1

            module.register_forward_hook(count)
    model(torch.rand(2, 1, 28, 28))
    assert calls == {"conv3.conv": 1, "conv3.from_r": 1, "conv4.conv": 3, "conv4.from_r": 3}


def test_what_precedes_the_image_is_computed_on_one_row_and_broadcast():
    """Biological unrolling: conv4 (the 4th layer) gets the image at step 3; before it, its
    inputs are the same for every example and run as one row. With BatchNorm (whose
    statistics depend on the rows) every step runs on the whole batch."""

    def rows_per_step(model: ConvRNN) -> list[int]:
        seen: list[int] = []
        model.layers["conv4"].register_forward_hook(
            lambda m, args, out: seen.append(out[0].shape[0])
        )
        model(torch.rand(4, 3, 32, 32))
        return seen

    model = models.build("rgc_intermediate", (3, 32, 32), 4, **TINY)
    assert rows_per_step(model) == [1, 1, 1] + [4] * 7  # steps 0-9: needed until step 9
    normed = models.build("rgc_intermediate", (3, 32, 32), 4, norm="batch", **TINY)
    assert rows_per_step(normed) == [4] * 10


def test_feedback_is_resized_with_aligned_corners_and_projected_with_a_bias():
    """The released harbor: a feedback source is resized bilinearly with corners aligned
    to the layer's size, then a 1x1 convolution with a bias; a source not produced yet
    contributes the bias alone."""
    model = models.build("rgc_intermediate", (3, 64, 64), 4, **TINY).double()
    layer = model.layers["conv5"]  # conv8 -> conv5 feedback: 2x2 source, 8x8 layer
    projection = layer.extra["conv8"]
    with torch.no_grad():
        projection.bias.normal_()
    source = torch.randn(2, projection.in_channels, 2, 2, dtype=torch.float64)
    a = torch.linspace(0, 1, 8, dtype=torch.float64)  # aligned corners: 0 and 1 map to ends
    by_hand = source[..., 0, 0, None, None] * (1 - a)[:, None] * (1 - a)[None, :]
    by_hand = by_hand + source[..., 0, 1, None, None] * (1 - a)[:, None] * a[None, :]
    by_hand = by_hand + source[..., 1, 0, None, None] * a[:, None] * (1 - a)[None, :]
    by_hand = by_hand + source[..., 1, 1, None, None] * a[:, None] * a[None, :]
    expected = F.conv2d(by_hand, projection.weight, projection.bias)
    torch.testing.assert_close(layer.project("conv8", source, (8, 8)), expected)
    bias_only = layer.project("conv8", None, (8, 8))
    torch.testing.assert_close(bias_only, projection.bias.view(1, -1, 1, 1))
