"""The quickstart overwrites nothing: its zoo name is one no zoo and no report of this
device holds."""

from okdhp_edge.bench.device import this_device_id
from okdhp_edge.quickstart import _free_zoo_name


def test_a_published_report_of_the_name_is_not_replaced(tmp_path):
    zoos, reports = tmp_path / "student_zoo", tmp_path / "bench" / "reports"
    assert _free_zoo_name("quickstart", zoos, reports) == "quickstart"
    (reports / this_device_id()).mkdir(parents=True)
    (reports / this_device_id() / "quickstart.json").write_text("{}")  # e.g. the published one
    assert _free_zoo_name("quickstart", zoos, reports) == "quickstart-2"
    (zoos / "quickstart-2").mkdir(parents=True)
    assert _free_zoo_name("quickstart", zoos, reports) == "quickstart-3"
    (reports / "another-device").mkdir()
    (reports / "another-device" / "quickstart-3.json").write_text("{}")  # not this device's
    assert _free_zoo_name("quickstart", zoos, reports) == "quickstart-3"
