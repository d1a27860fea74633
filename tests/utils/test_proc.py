"""What a process said last."""

from okdhp_edge.utils.proc import last_line


def test_last_line_says_why_a_process_ended():
    out = ("Traceback (most recent call last):\n  ...\n"
           "OSError: [Errno 28] No space left on device\n"
           "Warning: Permanently added 'host' to the list of known hosts.\n\n")
    assert last_line(out) == "Warning: Permanently added 'host' to the list of known hosts."
    assert last_line(out, skip=("Permanently added",)) == \
        "OSError: [Errno 28] No space left on device"
    assert last_line(out + "cleanup failed\n", prefer=("No space left",)).startswith("OSError")
    assert last_line(["", "  "], default="no output") == "no output"
    assert last_line("x" * 500, limit=10) == "x" * 10
