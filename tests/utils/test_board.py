"""Boards read as their users name them, from fixture trees of real boards
(tests/utils/boards/<board>/SOURCE.md names where each came from)."""

from pathlib import Path

import pytest

from okdhp_edge.bench.device import device_id
from okdhp_edge.utils.board import Board, Cluster, arm_tier, choose_cpus, read_board

BOARDS = Path(__file__).parent / "boards"


def _id(board: Board) -> str:
    """The device id the bench would file this board's reports under."""
    features = board.features
    return device_id({"cpu_model": board.model or "", "cores": sum(
        len(c.cpus) for c in board.clusters), "isa": arm_tier(features) if board.cpu_arch
        == "arm" else "avx512bf16", "machine": board.machine, "gpu": None,
        "emulated": board.emulated, "board_id": board.board_id, "guest_cpu": board.guest_cpu,
        "big_core": board.big.core})


@pytest.mark.parametrize("name, board_id, clusters, features, device", [
    ("raspberry-pi-5", "raspberry-pi-5", "4x Cortex-A76 @ 2.4 GHz", ("neon", "fp16", "dotprod"),
     "raspberry-pi-5-4c-dotprod"),
    ("raspberry-pi-4", "raspberry-pi-4", "4x Cortex-A72 @ 1.8 GHz", ("neon",),
     "raspberry-pi-4-4c-neon"),
    ("rk3588", "rk3588", "4x Cortex-A76 @ 2.4 GHz + 4x Cortex-A55 @ 1.8 GHz",
     ("neon", "fp16", "dotprod"), "rk3588-8c-dotprod"),
    ("jetson-orin-nano", "jetson-orin-nano", "6x Cortex-A78AE @ 1.7 GHz",
     ("neon", "fp16", "dotprod"), "jetson-orin-nano-6c-dotprod"),
    ("graviton3", None, "2x Neoverse-V1", ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve"),
     "neoverse-v1-2c-sve"),
])
def test_a_real_boards_record_and_id(name, board_id, clusters, features, device):
    board = read_board(BOARDS / name, machine="aarch64")
    assert board.cpu_arch == "arm" and board.emulated is None
    assert board.board_id == board_id
    assert " + ".join(c.describe() for c in board.clusters) == clusters
    assert board.features == features
    assert _id(board) == device


def test_big_little_clusters_fastest_first_and_the_bench_cores_follow():
    board = read_board(BOARDS / "rk3588", machine="aarch64")
    assert [c.cpus for c in board.clusters] == [(4, 5, 6, 7), (0, 1, 2, 3)]
    allowed = tuple(range(8))
    assert choose_cpus("big", board, allowed) == (4, 5, 6, 7)
    assert choose_cpus("little", board, allowed) == (0, 1, 2, 3)
    assert choose_cpus("all", board, allowed) == allowed
    assert choose_cpus("4-5,7", board, allowed) == (4, 5, 7)
    # a big cluster outside this process's affinity: what it may use
    assert choose_cpus("big", board, (0, 1)) == (0, 1)
    with pytest.raises(ValueError, match="CPU.s. 8 are not available .* 0-7"):
        choose_cpus("6-8", board, allowed)
    with pytest.raises(ValueError, match="give big, little, all"):
        choose_cpus("fast", board, allowed)


def test_one_cluster_big_means_every_core():
    board = read_board(BOARDS / "raspberry-pi-5", machine="aarch64")
    assert choose_cpus("big", board, (0, 1, 2, 3)) == (0, 1, 2, 3)


def test_a_jetson_names_its_l4t_release():
    assert read_board(BOARDS / "jetson-orin-nano", machine="aarch64").l4t == "R36.4.7"


def test_an_aarch64_process_reading_an_x86_cpu_is_emulated(monkeypatch):
    monkeypatch.setenv("QEMU_CPU", "cortex-a76")
    board = read_board(BOARDS / "qemu-aarch64-on-epyc", machine="aarch64")
    assert board.cpu_arch == "x86"
    assert "aarch64 user space on AMD EPYC" in board.emulated
    assert board.guest_cpu == "cortex-a76"
    assert _id(board) == "qemu-aarch64-cortex-a76-2c"
    assert "[emulated:" in board.describe()


def test_the_same_x86_cpu_read_natively_is_not_emulated():
    board = read_board(BOARDS / "qemu-aarch64-on-epyc", machine="x86_64")
    assert board.emulated is None and board.clusters == (Cluster("AMD EPYC", (0, 1)),)


def test_this_machine_reads_without_error():
    board = read_board()
    assert board.clusters and board.emulated is None


def test_an_emulated_user_space_shown_an_arm_cpuinfo_is_still_emulated(monkeypatch):
    """make arm-check shows the guest an Arm /proc/cpuinfo (ONNX Runtime's aarch64 build dies
    on the host's x86 one); the binfmt handler for the machine's own architecture tells."""
    monkeypatch.setenv("QEMU_CPU", "cortex-a76")
    board = read_board(BOARDS / "qemu-aarch64-shown-a76", machine="aarch64")
    assert board.cpu_arch == "arm" and board.clusters[0].core == "Cortex-A76"
    assert "aarch64-binfmt-P (binfmt_misc" in board.emulated
    assert _id(board) == "qemu-aarch64-cortex-a76-2c"
