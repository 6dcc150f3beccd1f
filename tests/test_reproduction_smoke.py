"""The course-reproduction script runs end to end in its reduced form and writes its report and pictures."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reproduce_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "experiments" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPRODUCTION.md").read_text()
    for title in ("Surface approximation", "Depth versus width", "MLP to ResNet", "MNIST", "U-Net", "adding problem",
                  "character-level GPT"):
        assert title in report
    for png in ("surface_curves.png", "depth_width.png", "mlp_vs_resnet.png", "unet_curves.png", "adding_curves.png"):
        data = (tmp_path / "reproduction" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert "3.02e-01" in report  # the course's figures stand beside ours
    mnist_section = report.split("## 4.")[1].split("## 5.")[0]
    assert "98.77" in mnist_section or "Skipped: " in mnist_section  # MNIST is absent from a bare checkout
    gpt_section = report.split("## 7.")[1]
    fence = next(line for line in gpt_section.splitlines() if line.startswith("```"))
    sample = gpt_section.split(fence + "\n")[1].split(fence)[0].strip("\n")
    assert sample.startswith("The network ") and len(sample) == len("The network ") + 120   # dslc generate's text
