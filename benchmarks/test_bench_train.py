"""Training throughput of the quickstart network on the CPU (images/s, peak RSS), ours
against the same architecture written pytorch-pose style, same threads, same precision.

Run: pytest benchmarks/test_bench_train.py --benchmark-only
"""

import resource

import pytest
import torch
from pytorch_pose_style import PoseStyleMultiBranch

from okdhp_edge.config import load_config
from okdhp_edge.models import create_model
from okdhp_edge.models.registry import model_kwargs_from_config
from okdhp_edge.utils.cpu import cpu_has_native_bf16

CFG = load_config("configs/quickstart.yaml")
W, H = CFG.data.input_size
BATCH = 32


def _step_fn(model, amp: bool, channels_last: bool):
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, H, W)
    t = torch.rand(BATCH, 17, H // 4, W // 4) * 0.1
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        heatmaps = (out.all_heatmaps() + [out.ensemble]) if hasattr(out, "all_heatmaps") \
            else out[0] + [out[1]]
        loss = sum(((h.float() - t) ** 2).mean() for h in heatmaps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    return step


def _ours():
    return create_model("okdhp", **model_kwargs_from_config(CFG.model, 17))


def _reference():
    m = CFG.model
    return PoseStyleMultiBranch(m.shared_stacks, m.branches, 17, m.width, m.stem_width, m.depth,
                                m.fau_kernels)


MODES = [("fp32_nchw", False, False), ("fp32_cl", False, True)]
if cpu_has_native_bf16():
    MODES.append(("bf16_cl", True, True))


@pytest.mark.parametrize("impl", ["okdhp_edge", "pytorch_pose_style"])
@pytest.mark.parametrize("mode,amp,cl", MODES, ids=[m[0] for m in MODES])
def test_train_step(benchmark, impl, mode, amp, cl):
    model = _ours() if impl == "okdhp_edge" else _reference()
    step = _step_fn(model, amp, cl)
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = BATCH / benchmark.stats.stats.median
    benchmark.extra_info["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    benchmark.extra_info["threads"] = torch.get_num_threads()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("mode", ["fp32_eager", "amp_channels_last"])
def test_gpu_unbalanced_coco_256x192(benchmark, mode):
    """4-stack unbalanced COCO network (shared 2 + [2, 4, 6], width 256) at 256x192, fp32
    eager vs AMP + channels_last (compare the two rows). On an H100 with a 16-core VM host
    (2026-11-26) they were level, 348 vs 352 ms: the step is bound by the host's dispatch."""
    from okdhp_edge.models import MultiBranchHourglass

    dev = torch.device("cuda")
    model = MultiBranchHourglass(2, (2, 4, 6), num_joints=17, width=256).to(dev).train()
    x = torch.randn(16, 3, 256, 192, device=dev)
    t = torch.rand(16, 17, 64, 48, device=dev) * 0.1
    amp = mode == "amp_channels_last"
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 2.5e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)

    def step():
        with torch.autocast("cuda", dtype=dtype, enabled=amp):
            out = model(x)
        loss = sum(((h.float() - t) ** 2).mean() for h in out.all_heatmaps() + [out.ensemble])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()

    step()
    torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = 16 / benchmark.stats.stats.median
    benchmark.extra_info["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30


GPU_STEP_MODES = [  # (id, amp, cuda graph, batch)
    ("eager_fp32_b32", False, False, 32), ("eager_bf16_b32", True, False, 32),
    ("graph_fp32_b32", False, True, 32), ("graph_bf16_b32", True, True, 32),
    ("eager_fp32_b128", False, False, 128),
]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("mode,amp,graph,batch", GPU_STEP_MODES, ids=[m[0] for m in GPU_STEP_MODES])
def test_gpu_quickstart_step(benchmark, mode, amp, graph, batch):
    """The quickstart network's training step on the GPU without the data loader: eager vs
    the whole step captured in one CUDA graph (Adam capturable), fp32 vs bf16 autocast. At
    this size the step is bound by per-op dispatch on the host, which a graph removes."""
    dev = torch.device("cuda")
    model = _ours().to(dev).to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, H, W, device=dev).contiguous(memory_format=torch.channels_last)
    t = torch.rand(batch, 17, H // 4, W // 4, device=dev) * 0.1
    opt = torch.optim.Adam(model.parameters(), 1e-3, capturable=graph)

    def body():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            out = model(x)
        loss = sum(((h.float() - t) ** 2).mean() for h in out.all_heatmaps() + [out.ensemble])
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    if graph:
        # grads set to None before capture: the captured backward allocates them from the
        # graph's pool and writes (not accumulates) them on every replay
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            static_loss = body()

        def step():
            g.replay()
            torch.cuda.synchronize()
    else:
        def step():
            opt.zero_grad(set_to_none=True)
            body()
            torch.cuda.synchronize()

    step()
    first = float(static_loss.detach()) if graph else None
    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)
    benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.median
    if graph:  # the replays train: the same batch's loss falls
        benchmark.extra_info["loss_first_last"] = [first, float(static_loss.detach())]
        assert float(static_loss.detach()) < first
