"""Quantization-aware online distillation (``train --qat-from RUN_DIR``).

A trained OKDHP run is fine-tuned with its students fake-quantized as the targets run them
(PT2E quantization-aware training with XNNPACK's quantizer: int8 weights per channel, int8
activations per tensor, convolutions and batch norms folded as at inference) while the FAU
and the ensemble it builds stay in float and keep teaching the branches through the OKDHP
loss (``qat.kd``; off: the same fine-tuning on the labels alone).

The whole multi-branch network is exported once (``torch.export``) and prepared; the
quantizer's annotations are kept only on the nodes of the submodules the fine-tuned students
are made of (``student_modules(i)`` of each branch in ``qat.branches``, every branch when it
is empty), so the FAU, its projection and the ensemble's weighted sum compute in float, on
the students' tensors as the students deploy them (the shared features and the branch
heatmaps are quantized where a student's operator makes them). A branch left out trains in
float on the shared features as the quantized students deploy them, and teaches through the
ensemble in float; it is not written to the QAT zoo (its float student is the float run's).
A student is the converted graph cut down to its branch's output (the shared trunk's
quantization parameters are the same in every student): the program its INT8 files are
made from (:mod:`okdhp_edge.convert.qat_program`).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from okdhp_edge.convert.qat_program import SATURATION_FREE_WEIGHT
from okdhp_edge.errors import ConfigError, UsageError
from okdhp_edge.families import zoo_student_names
from okdhp_edge.models.student import MultiBranchOutput, StudentOutput
from okdhp_edge.schema import closest
from okdhp_edge.training.result import QatOrigin
from okdhp_edge.training.selection import Head, Selection
from okdhp_edge.training.trainer import TrainedRun, Trainer

log = logging.getLogger(__name__)

QUANTIZER = "xnnpack-pt2e-qat"
# what it imports beyond training's packages: XNNPACK's quantizer (in the executorch
# package) and torch.onnx's exporter of the programs (onnxscript); the `qat` extra
QAT_PACKAGES = ("executorch.backends.xnnpack.quantizer", "onnxscript")


# ---------------------------------------------------------------------------- config


def qat_run_config(cfg: Any) -> Any:
    """The run configuration a QAT fine-tuning trains with: the float run's model, data and
    loss, with ``qat``'s epochs and LR as a constant schedule, the KD weight at full from
    the first step (``loss.ramp_epochs = 0``), KD on or off as ``qat.kd``, in float32 on one
    process, channels-first, not compiled; the run and its zoo are named after the float run
    (``<run>-qat``, ``<run>-qat-labels``). Idempotent (a resumed run applies it again)."""
    q = cfg.qat
    check_from_run(cfg)
    name = f"{Path(q.from_run).name}-qat{'' if q.kd else '-labels'}"
    train = dataclasses.replace(
        cfg.train, epochs=q.epochs, lr=q.lr, lr_steps=[], warmup_iters=0, plateau_patience=0,
        compile="off", amp="off", channels_last=False, lr_scaling="none", run_name=name)
    loss = dataclasses.replace(cfg.loss, distill=q.kd, ramp_epochs=0.0)
    zoo = dataclasses.replace(cfg.zoo, name="")  # the zoo takes the QAT run's name
    return dataclasses.replace(cfg, train=train, loss=loss, zoo=zoo)


def check_from_run(cfg: Any) -> None:
    """ConfigError, before anything is loaded, when ``qat.from_run`` cannot be fine-tuned
    as asked: not a trained run, a plain network (quantization-aware online distillation
    needs the multi-branch network and its ensemble), or a model config that differs from
    the run's (its checkpoint would not fit)."""
    from okdhp_edge.config import load_config
    from okdhp_edge.errors import ConfigError
    from okdhp_edge.families import is_multi_branch

    run = Path(cfg.qat.from_run)
    for need in ("config.yaml", "last.pt"):
        if not (run / need).is_file():
            raise ConfigError(f"qat.from_run {run}: no {need} there (a trained run's folder "
                              "holds both)")
    trained = load_config(run / "config.yaml").model
    if not is_multi_branch(trained.name):
        raise ConfigError(f"qat.from_run {run}: '{trained.name}' is a plain network; "
                          "quantization-aware online distillation fine-tunes a multi-branch "
                          "run (okdhp, okdhp_light)")
    for f in dataclasses.fields(trained):
        if getattr(trained, f.name) != getattr(cfg.model, f.name):
            raise ConfigError(f"model.{f.name} is {getattr(cfg.model, f.name)!r} here but "
                              f"{getattr(trained, f.name)!r} in {run}: QAT fine-tunes the "
                              "run's own network (leave the model keys to its config.yaml)")


# the largest int8 weight magnitude of each qat.weight_range (XNNPACK's quantizer: 127)
WEIGHT_LIMIT = {"full": 127, "half": SATURATION_FREE_WEIGHT}


def recipe(qcfg: Any, branches: list[str]) -> dict[str, Any]:
    """What a QAT student's manifest and INT8 files record of how it was quantized
    (``branches``: the students fake-quantized together, by name)."""
    acts = "symmetric" if qcfg.activations == "symmetric" else "asymmetric"
    limit = WEIGHT_LIMIT[qcfg.weight_range]
    weights = "int8 symmetric per channel" + ("" if qcfg.weight_range == "full" else
                                              f" in [-{limit}, {limit}] (7 bits)")
    return {"quantizer": QUANTIZER, "weights": weights, "weight_range": qcfg.weight_range,
            "activations": f"int8 {acts} per tensor", "kd": bool(qcfg.kd),
            "observer": f"moving-average min-max ({qcfg.averaging_constant:g})",
            "freeze_observers": float(qcfg.freeze_observers), "epochs": int(qcfg.epochs),
            "lr": float(qcfg.lr), "branches": list(branches)}


def quantized_branches(names: list[str], wanted: list[str]) -> list[int]:
    """The indices of the branches ``qat.branches`` names (``wanted``, zoo names; every
    branch when empty), in branch order. ConfigError naming the closest name otherwise."""
    for name in wanted:
        if name not in names:
            raise ConfigError(f"qat.branches: no student '{name}' in this run (did you mean "
                              f"'{closest(name, names)}'? its students: {', '.join(names)})")
    return [i for i, n in enumerate(names) if not wanted or n in wanted]


# ---------------------------------------------------------------------------- quantizer


def quantizer(qcfg: Any, modules: tuple[str, ...]) -> Any:
    """XNNPACK's QAT quantizer (per-channel int8 weights, per-tensor int8 activations with
    fused moving-average fake quantization), annotating only the nodes inside ``modules``
    (the network's dotted submodule names)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import (
        FakeQuantize,
        FusedMovingAvgObsFakeQuantize,
        MovingAverageMinMaxObserver,
    )

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    if qcfg.weight_range == "half":  # 7-bit weights: no u8 x s8 pair sum saturates
        limit = WEIGHT_LIMIT[qcfg.weight_range]
        config = dataclasses.replace(config, weight=dataclasses.replace(
            config.weight, quant_min=-limit, quant_max=limit))
    extra: dict[str, Any] = {"eps": 2**-12, "averaging_constant": qcfg.averaging_constant}
    act = config.input_activation
    fake_quant = FusedMovingAvgObsFakeQuantize.with_args(**extra)
    if qcfg.activations == "symmetric":  # the fused kernel moves a non-negative range's zero
        act = dataclasses.replace(act, qscheme=torch.per_tensor_symmetric)  # point to -128
        fake_quant = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, **extra)
    act = dataclasses.replace(act, observer_or_fake_quant_ctr=fake_quant)
    config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return _StudentsOnly(XNNPACKQuantizer().set_global(config),
                         tuple(f"{_ROOT}.{m}" for m in modules))


_ROOT = "net"  # the name of the network inside the exported wrapper


def _module_path(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _inside(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def _students_only_class() -> type:
    from torchao.quantization.pt2e.quantizer import Quantizer

    class StudentsOnly(Quantizer):
        """An inner quantizer's annotations, dropped from every node outside ``prefixes``
        (XNNPACK's quantizer cannot leave a module out by name)."""

        def __init__(self, inner: Any, prefixes: tuple[str, ...]) -> None:
            super().__init__()
            self.inner, self.prefixes = inner, prefixes

        def annotate(self, model: Any) -> Any:
            model = self.inner.annotate(model)
            for node in model.graph.nodes:
                if not _inside(_module_path(node), self.prefixes):
                    node.meta.pop("quantization_annotation", None)
                elif "quantization_annotation" in node.meta:
                    _bind_channel_axes(node)
            for node in model.graph.nodes:
                _fuse_clamp(node)
            return model

        def validate(self, model: Any) -> None:
            self.inner.validate(model)

    return StudentsOnly


def _bind_channel_axes(node: Any) -> None:
    """Give each per-channel weight of ``node``'s annotation its output-channel axis, bound
    into its fake quantizer's constructor. Two defects of the QAT path made a transposed
    convolution's weights (axis 1: output channels) quantize per input channel (axis 0),
    which XNNPACK cannot lower (ExecuTorch refused every MobileNetV2 QAT student): XNNPACK's
    conv-transpose-BN annotators leave the weights' axis at 0, and torchao's prepare passes
    ``ch_axis`` only to a constructor whose class name says "PerChannel" (its QAT weights
    use FusedMovingAvgObsFakeQuantize, whose observer then takes its default, 0)."""
    from torchao.quantization.pt2e import FakeQuantize

    annotation = node.meta["quantization_annotation"]
    transposed = node.op == "call_function" and "conv_transpose" in str(node.target)
    weight = node.args[1] if transposed and len(node.args) > 1 else None
    for edge, spec in list(annotation.input_qspec_map.items()):
        partial = getattr(getattr(spec, "observer_or_fake_quant_ctr", None), "p", None)
        if partial is None or getattr(spec, "qscheme", None) not in (
                torch.per_channel_symmetric, torch.per_channel_affine):
            continue
        axis = 1 if edge is weight else spec.ch_axis
        func = partial.func if axis == 0 else FakeQuantize  # the fused kernel: axis 0 only
        ctr = func.with_args(**{**partial.keywords, "ch_axis": axis})
        annotation.input_qspec_map[edge] = dataclasses.replace(
            spec, ch_axis=axis, observer_or_fake_quant_ctr=ctr)


def _fuse_clamp(node: Any) -> None:
    """A ReLU6 (``hardtanh``) quantized with the operator before it, as a convolution's fused
    clamp: XNNPACK's quantizer quantizes the convolution's (or its batch norm's) output and
    lets the ReLU6 share those parameters, so the int8 range spans the convolution's
    negative values and every runtime runs the clamp in float between a DequantizeLinear
    and a QuantizeLinear (ONNX Runtime: 35 float Clips and 34 layout transposes in mbv2-d64,
    15 of its convolutions left unfused). Here the producer's output is left float and the
    ReLU6's output gets the producer's own spec (a range of [0, 6] observed): what ONNX
    Runtime fuses into QLinearConv and XNNPACK into its convolution's output clamp."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    if node.op != "call_function" or "hardtanh" not in str(node.target):
        return
    src = node.args[0]
    ann = node.meta.get("quantization_annotation")
    src_ann = getattr(src, "meta", {}).get("quantization_annotation")
    if ann is None or src_ann is None or src_ann.output_qspec is None or len(src.users) != 1:
        return
    spec, src_ann.output_qspec = src_ann.output_qspec, None
    node.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={}, output_qspec=spec, _annotated=True)


def _StudentsOnly(inner: Any, prefixes: tuple[str, ...]) -> Any:  # noqa: N802 - a factory
    return _students_only_class()(inner, prefixes)


# ---------------------------------------------------------------------------- networks


class _Flat(nn.Module):
    """A multi-branch network returning its outputs as a flat tuple (what export traces):
    shared stack heatmaps, each branch's stack heatmaps, the ensemble, the FAU weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        setattr(self, _ROOT, net)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = getattr(self, _ROOT)(x)
        stacks = [h for hs in out.branch_stack_heatmaps for h in hs]
        return tuple(out.shared_heatmaps + stacks + [out.ensemble, out.weights])


class QatNetwork(nn.Module):
    """A multi-branch network prepared for quantization-aware training: the same outputs
    (:class:`MultiBranchOutput`), its students fake-quantized, the FAU in float.

    ``train()`` / ``eval()`` switch the exported graph's batch norms, and the range
    observers with them: they observe in training until frozen (:meth:`freeze_observers`),
    never in evaluation. Shape: [B, 3, H, W] -> heatmaps [B, K, H/s, W/s].
    """

    multi_branch = True

    def __init__(self, net: nn.Module, input_size: tuple[int, int], qcfg: Any) -> None:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        from okdhp_edge.convert import pt2e

        super().__init__()
        self.num_joints = net.num_joints
        self._names, self._record = net.branch_names(), net.multi_branch_record()
        self._zoo_names = zoo_student_names(self._names)
        self.quantized = quantized_branches(self._zoo_names, list(qcfg.branches))
        modules = tuple(dict.fromkeys(m for b in self.quantized for m in net.student_modules(b)))
        for m in net.modules():  # functional activations: an in-place one is a mutation
            if getattr(m, "inplace", False):  # that dead-code removal keeps, and that the
                m.inplace = False  # exported ONNX (no mutation) would not compute alike
        w, h = input_size
        example = torch.zeros(2, 3, h, w)  # shapes only (and the run's RNG untouched)
        with torch.no_grad():
            out = net.eval()(example)
        self.layout = (len(out.shared_heatmaps), [len(hs) for hs in out.branch_stack_heatmaps])
        batch = torch.export.Dim("batch", min=1, max=4096)
        ep = torch.export.export(_Flat(net).train(), (example,),
                                 dynamic_shapes={"x": {0: batch}})
        qz = quantizer(qcfg, modules)
        pt2e.install()  # patterns traced once per process, not on every switch and conversion
        self.graph = prepare_qat_pt2e(ep.module(), qz)
        self.register_buffer("observers_frozen", torch.zeros((), dtype=torch.bool))
        self.train()

    def forward(self, x: torch.Tensor) -> MultiBranchOutput:
        flat = list(self.graph(x))
        shared_n, per_branch = self.layout
        shared, rest = flat[:shared_n], flat[shared_n:]
        branches = []
        for n in per_branch:
            branches.append(rest[:n])
            rest = rest[n:]
        ensemble, weights = rest
        return MultiBranchOutput(shared, branches, [hs[-1] for hs in branches], ensemble,
                                 weights)

    def train(self, mode: bool = True) -> QatNetwork:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        self.training = mode  # not the graph's own train(): an exported graph refuses it
        if hasattr(self, "graph"):
            (move_exported_model_to_train if mode else move_exported_model_to_eval)(self.graph)
            observe = mode and not bool(self.observers_frozen)
            self.graph.apply(enable_observer if observe else disable_observer)
        return self

    def freeze_observers(self) -> None:
        """Stop moving the ranges (kept frozen across a resume: a buffer)."""
        self.observers_frozen.fill_(True)
        self.train(self.training)

    def branch_names(self) -> list[str]:
        return list(self._names)

    def multi_branch_record(self) -> dict[str, Any]:
        return dict(self._record)

    def float_state(self, state: Optional[dict[str, torch.Tensor]] = None
                    ) -> dict[str, torch.Tensor]:
        """The float network's state (weights and batch-norm statistics as fine-tuned), by
        the float network's own keys: of this network, or of ``state`` (a state dict of a
        QatNetwork like it: a snapshot)."""
        prefix = f"graph.{_ROOT}."
        state = self.state_dict() if state is None else state
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    def quantized_names(self) -> list[str]:
        """The zoo names of the students fine-tuned fake-quantized, in branch order."""
        return [self._zoo_names[b] for b in self.quantized]

    def students(self) -> dict[int, QatStudent]:
        """Every fake-quantized branch (by index) as a converted int8 program (copies;
        eval). One conversion serves them all: it folds each batch norm into its
        convolution by matching patterns (traced once per process: :mod:`okdhp_edge.convert.pt2e`),
        which a conversion per student would match again."""
        from torchao.quantization.pt2e import move_exported_model_to_eval
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        graph = _copy(self.graph)
        move_exported_model_to_eval(graph)
        converted = convert_pt2e(graph)
        shared_n, per_branch = self.layout
        ends = [shared_n + sum(per_branch[:b + 1]) - 1 for b in range(len(per_branch))]
        return {b: QatStudent(_keep_output(_copy(converted), ends[b]), self.num_joints)
                for b in self.quantized}


def _copy(module: Any) -> Any:
    """A deep copy of an exported graph (without torch's pytree deprecation notes, one per
    output spec)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


def _keep_output(graph: Any, index: int) -> Any:
    """``graph`` returning only its output ``index`` (as a 1-tuple), the rest removed."""
    from torch.utils import _pytree

    out = next(n for n in graph.graph.nodes if n.op == "output")
    out.args = ((out.args[0][index],),)
    for node in list(graph.graph.nodes):  # dtype assertions would keep the FAU alive
        if node.target == torch.ops.aten._assert_tensor_metadata.default:
            graph.graph.erase_node(node)
    codegen = graph.graph._codegen  # noqa: SLF001 - an exported module's output spec
    codegen.pytree_info = codegen.pytree_info._replace(out_spec=_pytree.tree_flatten((0,))[1])
    graph.graph.eliminate_dead_code()
    graph.delete_all_unused_submodules()
    graph.recompile()
    return graph


class QatStudent(nn.Module):
    """A quantization-aware student as PyTorch runs its int8 program (quantize /
    dequantize around every quantized operator): the reference its INT8 files are checked
    against. Shape: [B, 3, H, W] -> StudentOutput with one heatmap [B, K, H/s, W/s]."""

    def __init__(self, graph: Any, num_joints: int) -> None:
        super().__init__()
        self.graph, self.num_joints = graph, num_joints

    def forward(self, x: torch.Tensor) -> StudentOutput:
        return StudentOutput([self.graph(x)[0]])

    def train(self, mode: bool = True) -> QatStudent:
        """A converted program has no training mode (its graph refuses ``train()``)."""
        self.training = mode
        return self


# ---------------------------------------------------------------------------- trainer


class QatTrainer(Trainer):
    """The trainer on a :class:`QatNetwork` made from ``qat.from_run``'s last checkpoint.
    Checkpoints, resume and best-student selection are the trainer's; a student's best
    state is the whole network's at its best epoch (its quantization parameters with it)."""

    def __init__(self, cfg: Any, *args: Any, **kwargs: Any) -> None:
        if not cfg.qat.from_run:
            raise ValueError("QatTrainer needs qat.from_run (train --qat-from RUN_DIR)")
        for module in QAT_PACKAGES:  # checked before the run folder exists
            if importlib.util.find_spec(module.split(".")[0]) is None:
                raise UsageError(f"quantization-aware training needs {module}: "
                                 "pip install 'okdhp_edge[qat]'")
        super().__init__(cfg, *args, **kwargs)
        if self.dist.enabled:
            raise ValueError("quantization-aware fine-tuning runs in one process")
        # the ranges observe one iteration at least (a range never observed is [inf, -inf])
        self.freeze_at = max(1, int(cfg.qat.freeze_observers * cfg.train.epochs
                                    * self.iters_per_epoch))

    def _float_network(self) -> nn.Module:
        from okdhp_edge.models.registry import model_from_config

        return model_from_config(self.cfg.model, self.spec.num_joints)

    def _create_model(self) -> nn.Module:
        from okdhp_edge.training.checkpoint import load_checkpoint

        if self.plain:
            raise ValueError(f"qat.from_run: '{self.cfg.model.name}' is a plain network; "
                             "quantization-aware online distillation needs a multi-branch run")
        net = self._float_network()
        ck = load_checkpoint(Path(self.cfg.qat.from_run) / "last.pt", torch.device("cpu"))
        net.load_state_dict(ck["model"])
        log.info("quantization-aware fine-tuning of %s (its last checkpoint: epoch %d)",
                 self.cfg.qat.from_run, int(ck.get("epoch", 0)))
        return QatNetwork(net, tuple(self.cfg.data.input_size), self.cfg.qat)

    def _step(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor, epoch: int) -> Any:
        if self.freeze_at <= self.state.iteration and not bool(self.model.observers_frozen):
            log.info("iteration %d: activation ranges frozen", self.state.iteration)
            self.model.freeze_observers()
        return super()._step(x, t, w, epoch)

    def _selection(self) -> Selection:
        """A student's best state is the whole network's (its quantization parameters with
        it); its float student is rebuilt from that state."""
        return Selection(self.heads, self.state, self.student, snapshot=self._whole_state,
                         restore=self._float_student)

    def _whole_state(self, head: Head) -> dict[str, torch.Tensor]:  # noqa: ARG002
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def _float_student(self, head: Head, state: dict[str, torch.Tensor]) -> nn.Module:
        flt = self._float_network()
        flt.load_state_dict(self.model.float_state(state))
        return flt.student(head.branch).to(self.device)

    def _at(self, state: dict[str, torch.Tensor]) -> QatNetwork:
        net = _copy(self.model)
        net.load_state_dict(state)
        return net.eval()

    def result(self) -> TrainedRun:
        """The fake-quantized students: their float (fine-tuned) weights and, in
        ``quantized``, their int8 programs, each from the network's state at the student's
        best epoch. Branches left float (``qat.branches``) are not among them."""
        run = super().result()
        names = self.model.quantized_names()
        sel, quantized, by_epoch = self.selection, {}, {}  # one conversion per epoch
        for h in sel.heads:
            if h.name not in names:
                continue
            epoch = sel.epoch_of(h)
            if epoch not in by_epoch:
                state = sel.kept[h.name] if epoch != -1 else self._whole_state(h)
                by_epoch[epoch] = self._at(state).students()
            quantized[h.name] = by_epoch[epoch][h.branch].eval()
        per_student = ("students", "branches", "best_epoch", "select_metric")
        return dataclasses.replace(
            run, **{k: {n: getattr(run, k)[n] for n in names} for k in per_student},
            quantized=quantized,
            qat=QatOrigin(str(self.cfg.qat.from_run), recipe(self.cfg.qat, names)))
