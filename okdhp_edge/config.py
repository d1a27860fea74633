"""Configuration: dataclass schema, YAML overrides, ``key=value`` overrides.

Every section is a dataclass with defaults. A YAML file overrides some of them, and
``section.key=value`` strings override again. Unknown keys raise :class:`ConfigError`
naming the closest valid key; values of the wrong type raise it naming the key and the
expected type. ``save_config`` writes the fully resolved config; ``load_config`` of
that file gives back an equal config.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from okdhp_edge.data.formats import DATASET_FORMATS
from okdhp_edge.errors import ConfigError
from okdhp_edge.families import ENCODER_ABBREVIATIONS, FAMILIES, Family, family_of, fields_read
from okdhp_edge.schema import closest, coerce, type_name
from okdhp_edge.utils.io import atomic_write_text


def _imagenet() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from okdhp_edge.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return IMAGENET_MEAN, IMAGENET_STD


@dataclass
class DataConfig:
    """Where the data is and how samples are made."""

    dataset: str = "synthetic"  # a format of okdhp_edge.data.formats: synthetic | coco | mpii
    root: str = "data/synthetic"  # synthetic: generated here when missing
    train_ann: str = ""  # coco/mpii: annotation file of the training split
    train_images: str = ""
    report_ann: str = ""  # the split final numbers are reported on (e.g. COCO val2017)
    report_images: str = ""
    report_headboxes: str = ""  # mpii: gt_valid.mat or a headbox json
    select_fraction: float = 0.1  # share of training images held out as the selection split
    select_max_images: int = 500
    synthetic_num_train: int = 3000
    synthetic_num_val: int = 300
    synthetic_image_size: list[int] = field(default_factory=lambda: [320, 240])
    synthetic_seed: int = 0
    input_size: list[int] = field(default_factory=lambda: [192, 256])  # [W, H]
    heatmap_stride: int = 4
    sigma: float = 2.0
    scale_factor: float = 0.25
    rot_factor: float = 30.0
    rot_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0
    box_padding: float = 1.25
    # input normalisation (x / 255 - mean) / std per RGB channel: training reads it, every
    # student records it (preprocessing.mean/std), evaluation and the runtime read that
    mean: list[float] = field(default_factory=lambda: list(_imagenet()[0]))
    std: list[float] = field(default_factory=lambda: list(_imagenet()[1]))
    det_file: str = ""  # person detections (COCO results json) for the report split
    det_score_thr: float = 0.0
    bad_image: str = "fail"  # fail | skip
    workers: int = 2
    # images/s the loader must feed (0: 1000 on CUDA, not checked on the CPU); the trainer
    # measures one core's loader rate at start and logs the workers this needs
    target_rate: float = 0.0


@dataclass
class ModelConfig:
    """Architecture. ``name`` is a model name of the family table
    (:data:`okdhp_edge.families.FAMILIES`; ``python -m okdhp_edge.models`` lists them)."""

    name: str = "okdhp"
    width: int = 256
    stem_width: int = 64
    # released: the OKDHP code's stem (R(2s->F), R(F->F)); lua: Newell's (R(2s->2s), R(2s->F))
    stem: str = "released"
    depth: int = 4  # hourglass recursion depth
    num_stacks: int = 2  # plain hourglass (name == "hg")
    shared_stacks: int = 2
    branches: list[int] = field(default_factory=lambda: [2, 2, 2])
    fau: str = "released"  # released | paper | mean
    fau_kernels: list[int] = field(default_factory=lambda: [3, 5, 7])
    fau_hidden: int = 64
    # light networks (okdhp_light, light): encoder resnet18 | mobilenetv2 | shufflenetv2,
    # its width multiplier, deconvolution decoders (3 layers: stride 32 -> 4)
    encoder: str = "mobilenetv2"
    width_mult: float = 1.0
    decoder_widths: list[int] = field(default_factory=lambda: [64, 128, 256])
    decoder_width: int = 256  # the plain light network's decoder
    decoder_layers: int = 3
    fau_width: int = 64  # the FAU's 1x1 projection of the encoder features
    # local ImageNet checkpoint of the encoder (reference layout); empty: from scratch
    encoder_checkpoint: str = ""


@dataclass
class LossConfig:
    """OKDHP loss: sum of MSE over stacks + ensemble MSE + ramped pixel-wise KL."""

    lambda_ens: float = 1.0
    lambda_kd: float = 2.0
    ramp_epochs: float = 90.0
    distill: bool = True
    kl_temperature: float = 1.0
    kl_norm: str = "pixels"  # pixels (released: / (B*H*W)) | joint (/ (B*K))
    detach_ensemble: bool = False


@dataclass
class TrainConfig:
    """Optimisation and run bookkeeping."""

    epochs: int = 150
    batch_size: int = 16
    lr: float = 2.5e-4
    lr_steps: list[int] = field(default_factory=lambda: [90, 120])
    lr_factor: float = 0.1
    warmup_iters: int = 0
    weight_decay: float = 0.0
    seed: int = 0
    deterministic: bool = False
    amp: str = "auto"  # auto | off | bf16 | fp16
    # torch.compile of the training step's forward, losses and backward (the optimizer is
    # the fused Adam kernel on CUDA): off | default | max-autotune | reduce-overhead (CUDA
    # graphs: static shapes, CUDA only; on the CPU it runs as default)
    compile: str = "off"
    # batch size and LR together: the LR given is for lr_reference_batch images per step
    # (all ranks); linear (Goyal et al. 2017) or sqrt scaling to the batch used, warm-up
    # kept; none uses train.lr as it is
    lr_scaling: str = "none"
    lr_reference_batch: int = 16
    channels_last: bool = True
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # 0: all cores, fewer while other processes keep them busy; N: pinned
    val_every: int = 1
    val_max_images: int = 0  # 0: the whole selection split
    out_dir: str = "runs"
    run_name: str = ""
    max_iters_per_epoch: int = 0  # 0: the whole training set each epoch
    log_every: int = 20
    # a checkpoint at least this often, also mid-epoch (sampler position and RNG included):
    # a SIGKILL loses at most this much training; 0: only at epoch ends and on SIGINT/SIGTERM
    checkpoint_minutes: float = 5.0
    # SIGINT/SIGTERM: the run finishes its iteration and writes a checkpoint within this
    # many seconds, else it says so and exits without one (a second signal exits at once)
    stop_deadline_s: float = 120.0
    # Plateau schedule, on when plateau_patience > 0 (then lr_steps must be empty and
    # train.epochs is only a cap): a validation at which no student's selection AP, averaged
    # over its last plateau_window validations (one noisy value must not count as progress),
    # beats its best such average by more than plateau_min_delta is stale; after
    # plateau_patience stale validations in a row the LR drops by lr_factor, and once it has
    # dropped plateau_drops times the next such plateau ends the run, though not before
    # min_wall_s seconds of training. No validation before epoch plateau_min_epoch is stale:
    # a run whose AP has not yet left 0 (or whose KD ramp still changes the loss) has not
    # levelled off.
    plateau_patience: int = 0
    plateau_min_delta: float = 0.002
    plateau_window: int = 3
    plateau_drops: int = 2
    plateau_min_epoch: int = 0
    min_wall_s: float = 0.0


@dataclass
class EvalConfig:
    """Test-time settings."""

    flip_test: bool = True
    batch_size: int = 32
    rescore_thr: float = 0.2  # joints above this confidence count in the rescoring
    oks_nms_thr: float = 0.9
    bootstrap: int = 1000  # resamples of each student's report-split interval (0: none)


@dataclass
class ZooConfig:
    """Where the students of a run go."""

    root: str = "student_zoo"
    name: str = ""  # default: the run name
    student_prefix: str = "student"


@dataclass
class QatConfig:
    """Quantization-aware fine-tuning of a trained OKDHP run (``train --qat-from RUN_DIR``):
    the students fake-quantized as the targets run them (int8 weights per channel, int8
    activations per tensor: PT2E QAT with XNNPACK's quantizer), the FAU and its ensemble in
    float, teaching them through the OKDHP loss when ``kd``. Its own epochs and LR replace
    the float run's schedule (constant LR, the KD weight at full from the first step)."""

    from_run: str = ""  # the float run folder (set by --qat-from); "": not a QAT run
    epochs: int = 2
    lr: float = 2.5e-5
    kd: bool = True  # the KL terms towards the float ensemble; False: labels only
    # asymmetric: XNNPACK's int8 activations (ONNX Runtime, OpenVINO, ExecuTorch, LiteRT);
    # symmetric: zero points 0, which TensorRT's explicit quantization also reads
    activations: str = "asymmetric"
    # full: int8 weights in [-127, 127]; half: in [-63, 63], for x86 CPUs without VNNI (AVX2,
    # AVX-512 without VNNI), whose u8 x s8 kernels (OpenVINO's) saturate a 16-bit sum of two
    # full-range products: NNCF's overflow fix, trained in (docs/int8.md)
    weight_range: str = "full"
    averaging_constant: float = 0.01  # the moving-average range observers' step
    # fraction of the QAT iterations after which the activation ranges stop moving (1: never)
    freeze_observers: float = 0.5
    # the students fake-quantized, by their zoo names (e.g. [mbv2-d32]); []: every branch.
    # The other branches stay float: they train and teach through the ensemble in float,
    # and are left out of the QAT zoo (their float students are the float run's)
    branches: list[str] = field(default_factory=list)


@dataclass
class Config:
    """The whole configuration of a run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    qat: QatConfig = field(default_factory=QatConfig)


# --------------------------------------------------------------------------- typing


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (the one strict loader's check; ints
    widen to float)."""
    return coerce(value, tp, key, ConfigError, widen=True)


# Fixed-length list fields: key -> length.
_FIXED_LENGTH = {
    "data.input_size": 2,
    "data.synthetic_image_size": 2,
    "data.mean": 3,
    "data.std": 3,
}

_CHOICES = {
    "data.dataset": tuple(DATASET_FORMATS),
    "data.bad_image": ("fail", "skip"),
    "model.fau": ("released", "paper", "mean"),
    "model.stem": ("released", "lua"),
    "loss.kl_norm": ("pixels", "joint"),
    "train.amp": ("auto", "off", "bf16", "fp16"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.compile": ("off", "default", "max-autotune", "reduce-overhead"),
    "train.lr_scaling": ("none", "linear", "sqrt"),
    "model.encoder": tuple(ENCODER_ABBREVIATIONS),
    "qat.activations": ("asymmetric", "symmetric"),
    "qat.weight_range": ("full", "half"),
}


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for name, value in updates.items():
        key = f"{prefix}{name}"
        if name not in names:
            hint = closest(str(name), names)
            raise ConfigError(f"unknown key '{key}'; did you mean '{prefix}{hint}'?")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of its keys, got {value!r}")
            _apply(current, value, f"{key}.")
            continue
        if key in _CHOICES and isinstance(value, bool):  # YAML 1.1 reads off/on as booleans
            value = "on" if value else "off"
        value = _coerce(value, hints[name], key)
        if key in _FIXED_LENGTH and len(value) != _FIXED_LENGTH[key]:
            raise ConfigError(
                f"{key}: expected a list of {_FIXED_LENGTH[key]} values, got {len(value)}"
            )
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{key}: expected one of {list(_CHOICES[key])}, got {value!r}")
        setattr(obj, name, value)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value`` and parse the value as YAML (``[192,256]``, ``3``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                base: Optional[str | Path] = None) -> Config:
    """Build a :class:`Config` from defaults, an optional ``base`` YAML (a run's resolved
    config), an optional YAML file over it and overrides.

    Raises:
        ConfigError: unknown key, wrong type, unreadable file.
    """
    cfg = Config()
    given: set[str] = set()  # the model keys the file and overrides set
    for source in (base, path):
        if source is not None:
            data = _read_yaml(Path(source))
            _apply(cfg, data)
            if source is path:
                given |= set((data.get("model") or {}) if isinstance(data, dict) else ())
    for text in overrides or []:
        key, value = parse_override(text)
        _apply(cfg, _nest(key, value))
        if key.startswith("model."):
            given.add(key.split(".", 1)[1])
    validate(cfg)
    _say_unread(cfg, given)
    return cfg


def _say_unread(cfg: Config, given: set[str]) -> None:
    """One warning naming the model keys set for another family (read by it, not by
    ``model.name``'s). Not an error: one override list shared by runs of both families is
    a pattern of the kit's own sweeps and tests."""
    import logging

    mine = _family(cfg.model)
    fields = {f.name: fields_read(f, ModelConfig()) for f in FAMILIES}
    other = {k: f for f, ks in fields.items() if f != mine.name for k in ks}
    unread = sorted(k for k in given if k in other and k not in fields[mine.name]
                    and getattr(cfg.model, k) != getattr(ModelConfig(), k))
    if unread:
        logging.getLogger(__name__).warning(
            "%s: read by the %s family only; model.name=%s (%s) ignores %s",
            ", ".join(f"model.{k}" for k in unread), other[unread[0]], cfg.model.name,
            mine.name, "it" if len(unread) == 1 else "them")


def checked(cfg: Config) -> Config:
    """A config built or edited in Python (``cfg.train.lr = -1``), checked as the command
    line checks one: every value against its type and choices, then :func:`validate`.
    Returns a fresh, checked copy (ConfigError names the key)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected an okdhp_edge.config.Config, got {type(cfg).__name__}")
    fresh = Config()
    _apply(fresh, config_to_dict(cfg))
    validate(fresh)
    return fresh


def check_machine(cfg: Config) -> None:
    """The knobs that multiply a resource, against what this machine has, where a run
    starts on it (a config may come from a larger one): ``train.threads`` at most its
    cores, ``data.workers`` at most twice them (a run with 999 threads on 2 cores started
    2,001 threads and stalled the machine)."""
    from okdhp_edge.utils.cpu import available_cores

    cores = available_cores()
    if cfg.train.threads > cores:
        raise ConfigError(f"train.threads={cfg.train.threads}: this machine has {cores} "
                          "core(s) for this process (0: all of them, fewer while others are "
                          "busy)")
    if cfg.data.workers > 2 * cores:
        raise ConfigError(f"data.workers={cfg.data.workers}: at most {2 * cores} on this "
                          f"machine's {cores} core(s)")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid UTF-8 YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.pop("schema", None)
    return data


# numeric keys and their lower bound: (key, bound, strict); every float must be finite
_RANGES = (
    ("data.heatmap_stride", 1, False), ("data.workers", 0, False), ("data.sigma", 0, True),
    ("data.box_padding", 0, True), ("model.width", 1, False), ("model.stem_width", 1, False),
    ("model.depth", 1, False), ("model.num_stacks", 1, False), ("model.fau_hidden", 1, False),
    ("model.width_mult", 0, True), ("model.decoder_width", 1, False),
    ("model.decoder_layers", 1, False), ("model.fau_width", 1, False),
    ("train.lr", 0, True), ("train.lr_factor", 0, True), ("train.weight_decay", 0, False),
    ("train.warmup_iters", 0, False), ("train.val_every", 1, False),
    ("train.max_iters_per_epoch", 0, False), ("train.threads", 0, False),
    ("train.log_every", 1, False), ("train.stop_deadline_s", 0, True),
    ("eval.batch_size", 1, False),
    ("data.scale_factor", 0, False), ("data.rot_factor", 0, False),
    ("data.select_max_images", 1, False), ("data.synthetic_num_train", 1, False),
    ("data.synthetic_num_val", 1, False), ("loss.lambda_ens", 0, False),
    ("loss.lambda_kd", 0, False), ("loss.ramp_epochs", 0, False),
    ("loss.kl_temperature", 0, True), ("qat.epochs", 1, False), ("qat.lr", 0, True),
    ("qat.averaging_constant", 0, True),
)
# probabilities and thresholds: in [0, 1]
_UNIT = ("data.rot_prob", "data.flip_prob", "data.half_body_prob", "data.det_score_thr",
         "eval.rescore_thr", "eval.oks_nms_thr", "qat.averaging_constant",
         "qat.freeze_observers")


def _check_ranges(cfg: Config) -> None:
    """Values that parse but cannot run (a negative LR, a zero stride, NaN) fail here, at
    load time, with the key named, instead of deep inside a run."""
    import math

    for key, bound, strict in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if value < bound or (strict and value == bound):
            raise ConfigError(f"{key}: expected a value {'>' if strict else '>='} {bound}, "
                              f"got {value!r}")
    for key in _UNIT:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not 0.0 <= value <= 1.0:  # NaN fails too
            raise ConfigError(f"{key}: expected a value in [0, 1], got {value!r}")
    _check_lists(cfg)


def _check_lists(cfg: Config) -> None:
    """List values, whatever the family: a field of another family is checked too (an
    hourglass config with ``model.decoder_widths=[]`` is refused, not trained)."""
    m, t = cfg.model, cfg.train
    if not m.fau_kernels or any(k < 1 or k % 2 == 0 for k in m.fau_kernels):
        raise ConfigError(f"model.fau_kernels: expected odd kernel sizes >= 1, got "
                          f"{m.fau_kernels}")
    if not m.decoder_widths or min(m.decoder_widths) < 1:
        raise ConfigError("model.decoder_widths: expected a non-empty list of widths >= 1")
    if any(s < 1 for s in t.lr_steps) or t.lr_steps != sorted(t.lr_steps):
        raise ConfigError(f"train.lr_steps: expected increasing epochs >= 1, got "
                          f"{t.lr_steps}")
    if not all(v > 0 and math.isfinite(v) for v in cfg.data.std) or \
            not all(math.isfinite(v) for v in cfg.data.mean):
        raise ConfigError(f"data.mean / data.std: finite numbers, std > 0; got "
                          f"{cfg.data.mean} / {cfg.data.std}")
    if cfg.eval.bootstrap != 0 and not 100 <= cfg.eval.bootstrap <= 100_000:
        raise ConfigError(f"eval.bootstrap: expected 0 (no interval) or 100..100000 "
                          f"resamples, got {cfg.eval.bootstrap}")


def _family(mcfg: ModelConfig) -> Family:
    """The family of ``model.name``; ConfigError naming the closest known name."""
    try:
        return family_of(mcfg.name)
    except ValueError as exc:
        import difflib

        known = [n for f in FAMILIES for n in (f.multi, *f.plain)]
        close = difflib.get_close_matches(mcfg.name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"model.name: {exc}{hint}") from None


def _check_family(cfg: Config, family: Family) -> None:
    """The family's own rules, and the data's heatmap stride is the one the network
    outputs (the family's rule)."""
    try:
        family.check(cfg.model, cfg.data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    stride = family.heatmap_stride(cfg.model)
    if stride != cfg.data.heatmap_stride:
        raise ConfigError(f"model.name {cfg.model.name} (with its model keys) gives heatmaps "
                          f"at stride {stride:g}, but data.heatmap_stride is "
                          f"{cfg.data.heatmap_stride}")


def validate(cfg: Config) -> None:
    """Cross-field checks that a type alone cannot express."""
    _check_ranges(cfg)
    if min(cfg.data.input_size) < 16:
        raise ConfigError("data.input_size: each side must be at least 16 pixels")
    for side in cfg.data.input_size:
        if side % cfg.data.heatmap_stride:
            raise ConfigError(
                f"data.input_size: each side must divide by data.heatmap_stride "
                f"({cfg.data.heatmap_stride})")
    _check_family(cfg, _family(cfg.model))
    if not cfg.model.branches or min(cfg.model.branches) < 1:
        raise ConfigError("model.branches: expected a non-empty list of stack counts >= 1")
    if cfg.model.shared_stacks < 0:
        raise ConfigError("model.shared_stacks: expected an int >= 0")
    if cfg.train.checkpoint_minutes < 0:
        raise ConfigError("train.checkpoint_minutes: expected a number >= 0 (0: off)")
    if cfg.train.lr_reference_batch < 1 or cfg.data.target_rate < 0:
        raise ConfigError("train.lr_reference_batch must be >= 1 and data.target_rate >= 0")
    if cfg.train.batch_size < 1 or cfg.train.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be >= 1")
    t = cfg.train
    if min(t.plateau_patience, t.plateau_drops, t.plateau_min_delta, t.plateau_min_epoch) < 0:
        raise ConfigError("train.plateau_patience, plateau_drops, plateau_min_delta and "
                          "plateau_min_epoch must be >= 0")
    if t.plateau_window < 1:
        raise ConfigError("train.plateau_window: expected an int >= 1")
    if t.plateau_patience and t.lr_steps:
        raise ConfigError(f"train.lr_steps {t.lr_steps}: a plateau schedule "
                          f"(train.plateau_patience={t.plateau_patience}) drops the LR itself; "
                          f"set train.lr_steps=[]")
    for key in ("min_wall_s", "plateau_min_epoch"):
        if getattr(t, key) and not t.plateau_patience:
            raise ConfigError(f"train.{key} needs a plateau schedule (train.plateau_patience > 0)")
    if not 0.0 <= cfg.data.select_fraction < 1.0:
        raise ConfigError("data.select_fraction: expected a float in [0, 1)")
    _check_names(cfg)


def _check_names(cfg: Config) -> None:
    """Names that become folders under a folder the user chose (``train.out_dir``,
    ``zoo.root``) must stay inside it; the chosen folders themselves are free."""
    from okdhp_edge.utils.values import is_plain_name

    for key, parent in (("zoo.name", "zoo.root"), ("train.run_name", "train.out_dir")):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value and not is_plain_name(value):
            raise ConfigError(f"{key}: '{value}' must be a plain name (no '/', not '.' or "
                              f"'..'): it names a folder inside {parent}")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data."""
    return dataclasses.asdict(cfg)


def config_text(cfg: Config) -> str:
    """The fully resolved config as YAML text (what :func:`save_config` writes)."""
    return yaml.safe_dump({"schema": 1, **config_to_dict(cfg)}, sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML, atomically."""
    atomic_write_text(Path(path), config_text(cfg))


def config_keys() -> list[tuple[str, str, Any, str]]:
    """Every training key: ``(section.key, type, default, help)``, the help read from the
    comment beside the field or just above it in this module (what ``okdhp train --show``
    prints)."""
    import inspect
    import typing

    out = []
    for section in dataclasses.fields(Config):
        cls = section.type if isinstance(section.type, type) else globals()[section.type]
        notes = _field_comments(inspect.getsource(cls))
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((f"{section.name}.{f.name}", type_name(hints[f.name]), default,
                        notes.get(f.name, "")))
    return out


def _field_comments(source: str) -> dict[str, str]:
    """field name -> the comment on its line, or the comment lines just above it."""
    notes, above = {}, []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        name, colon, rest = text.partition(":")
        if colon and name.isidentifier() and "=" in rest:
            inline = rest.split("#", 1)[1].strip() if "#" in rest else ""
            notes[name] = " ".join(above + ([inline] if inline else []))
        above = []
    return notes
