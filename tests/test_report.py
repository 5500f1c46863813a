"""The run report renders: every section, non-blank PNGs, and a non-blank page in headless Chromium."""

import os
from pathlib import Path

import pytest

from pipeline import report

CHROMIUM_MISSING = not Path(report.CHROMIUM).exists()


def needs_chromium():
    if CHROMIUM_MISSING:
        if os.environ.get("CI"):
            pytest.fail(f"{report.CHROMIUM} is missing in CI (.ci/run installs it)")
        pytest.skip(f"{report.CHROMIUM} not installed (apt-get install -y chromium); the page is not screenshotted")


def _data() -> report.ReportData:
    metrics = {"example_count": 100.0, "binary_accuracy": 0.8, "auc": 0.85, "precision": 0.79, "recall": 0.82,
               "true_positives": 41.0, "false_positives": 11.0, "true_negatives": 39.0, "false_negatives": 9.0}
    return report.ReportData(
        pipeline_name="sentiment-polarity", run_id="2026-01-01T00:00:00",
        summary={"blessed": True, "pushed_path": "/x/serving/sentiment-polarity/17", "components": [
            {"component": "Trainer", "state": "COMPLETE", "wall_time_s": 12.5}]},
        history={"loss": [0.69, 0.55, 0.45], "val_loss": [0.68, 0.6, 0.58],
                 "binary_accuracy": [0.55, 0.72, 0.8], "val_binary_accuracy": [0.57, 0.7, 0.74]},
        slices={"Overall": metrics, "length_bucket=0-63": {**metrics, "binary_accuracy": 0.7, "example_count": 40.0},
                "length_bucket=64-127": {**metrics, "binary_accuracy": 0.86, "example_count": 60.0},
                "source=rt-polarity.csv.gz": metrics},
        statistics={"train": {"num_examples": 800, "features": {
            "num_chars": {"type": "number", "mean": 110.0, "std": 50.0, "min": 5.0, "max": 260.0, "missing": 0},
            "text": {"type": "string", "unique": 800, "avg_length": 110.0, "missing": 0, "top": [("x", 1)]}},
            "num_chars_histogram": [(0, 50, 100), (50, 100, 300), (100, 150, 250), (150, 260, 150)]}},
        reviews=[{"text": "a gorgeous <b>witty</b> film", "true_label": 1, "label": 1, "probability": 0.9,
                  "length": 4, "tokens": ["a", "gorgeous", "<b>witty</b>", "film"],
                  "attention": [0.05, 0.6, 0.3, 0.05], "trajectory": [0.5, 0.8, 0.9, 0.9]},
                 {"text": "dull", "true_label": 1, "label": 0, "probability": 0.2, "length": 1,
                  "tokens": ["dull"], "attention": [1.0], "trajectory": [0.2]}],
        infra={"blessed": True, "failures": []},
    )


def test_render_writes_every_section_and_non_blank_images(tmp_path):
    page = report.render(_data(), tmp_path)
    text = page.read_text(encoding="utf-8")
    for heading in ("Training curves", "Evaluation (TFMA, test split)", "Data statistics (TFDV)",
                    "Test reviews: attention and trajectory"):
        assert heading in text
    assert "length_bucket=64-127" in text and "source=rt-polarity.csv.gz" in text
    # Tokens are escaped and shaded by attention (the heaviest token darkest).
    assert "&lt;b&gt;witty&lt;/b&gt;" in text and "<b>witty</b>" not in text
    assert 'title="attention 0.6000" style="background: rgba(255,140,0,1.000)"' in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["confusion_matrix.png", "slices.png", "text_length.png", "training_curves.png",
                    "trajectory_0.png", "trajectory_1.png"]
    for png in pngs:
        assert f'src="{png}"' in text
        assert not report.image_is_blank(tmp_path / png), png


def test_a_run_without_a_model_still_renders(tmp_path):
    data = _data()
    data.history, data.slices, data.reviews, data.statistics = {}, {}, [], {}
    text = report.render(data, tmp_path).read_text()
    assert "No training history" in text and "No model to explain" in text
    assert not list(tmp_path.glob("*.png"))


def test_blank_image_detection(tmp_path):
    from PIL import Image

    Image.new("RGB", (50, 50), "white").save(tmp_path / "white.png")
    assert report.image_is_blank(tmp_path / "white.png")


def test_page_renders_in_headless_chromium(tmp_path):
    needs_chromium()
    page = report.render(_data(), tmp_path / "report")
    shot = report.screenshot(page, tmp_path / "shot.png", height=2400)
    assert not report.image_is_blank(shot)
    from PIL import Image
    import numpy as np

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # The page's images were drawn: the plots' blue bars / curves appear, not just text on white.
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 120)
    orange = (pixels[..., 0] > 200) & (pixels[..., 1] > 100) & (pixels[..., 1] < 200) & (pixels[..., 2] < 80)
    assert blue.sum() > 2000, "no plot colours in the screenshot"
    assert orange.sum() > 50, "no attention shading in the screenshot"
