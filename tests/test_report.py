"""The run report renders: every section, non-blank PNGs, text from the run escaped, AUC plotted
when the history has it, and a non-blank page in headless Chromium. (The model card it links:
tests/test_model_card.py.)"""

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


def test_text_from_the_run_is_escaped_in_the_page(tmp_path):
    data = _data()
    data.pipeline_name = "sentiment-<script>alert(1)</script>"
    data.run_id = 'run" onmouseover="alert(2)'
    data.summary["pushed_path"] = "/x/<b>17</b>"
    data.summary["components"][0]["component"] = "<i>Trainer</i>"
    data.infra = {"blessed": False, "failures": ["canary <em>3</em> & more"]}
    data.slices["source=<img src=x onerror=alert(3)>.csv"] = data.slices.pop("source=rt-polarity.csv.gz")
    data.statistics["train"]["features"]["text"]["top"] = [("<u>top</u>", 3)]
    data.reviews[1]["tokens"] = ["<svg/onload=alert(4)>"]
    text = report.render(data, tmp_path).read_text()
    for raw in ("<script>alert(1)", 'onmouseover="alert(2)', "<b>17</b>", "<i>Trainer", "<em>3</em>", "& more",
                "<img src=x", "<u>top", "<svg/onload"):
        assert raw not in text, raw
    for escaped in ("sentiment-&lt;script&gt;alert(1)&lt;/script&gt;", "run&#34; onmouseover=&#34;alert(2)",
                    "/x/&lt;b&gt;17&lt;/b&gt;", "&lt;i&gt;Trainer&lt;/i&gt;",
                    "canary &lt;em&gt;3&lt;/em&gt; &amp; more",
                    "source=&lt;img src=x onerror=alert(3)&gt;.csv", "&lt;u&gt;top&lt;/u&gt; (3)",
                    "&lt;svg/onload=alert(4)&gt;"):
        assert escaped in text, escaped


def test_the_page_template_escapes_whatever_its_name():
    env = report._environment()
    assert env.autoescape is True
    assert env.from_string("{{ v }}").render(v="<a href='x'>&") == "&lt;a href=&#39;x&#39;&gt;&amp;"


def test_auc_is_plotted_beside_loss_and_accuracy_when_in_the_history(tmp_path):
    from PIL import Image

    # The Trainer's history.json as Keras writes it: "accuracy", "auc" and their val_ twins.
    history = {"loss": [0.6, 0.4, 0.35], "val_loss": [0.55, 0.45, 0.44], "accuracy": [0.7, 0.82, 0.86],
               "val_accuracy": [0.72, 0.8, 0.81], "auc": [0.75, 0.9, 0.93], "val_auc": [0.78, 0.88, 0.89],
               "epochs_run": [0, 1, 2]}
    assert report.plot_training_curves(history, tmp_path / "with.png") == ["loss", "accuracy", "AUC"]
    without = {k: v for k, v in history.items() if "auc" not in k}
    assert report.plot_training_curves(without, tmp_path / "without.png") == ["loss", "accuracy"]
    with_auc, no_auc = Image.open(tmp_path / "with.png"), Image.open(tmp_path / "without.png")
    assert with_auc.width > no_auc.width  # a third panel
    third = with_auc.crop((with_auc.width * 2 // 3, 0, with_auc.width, with_auc.height))
    third.save(tmp_path / "auc_panel.png")
    assert not report.image_is_blank(tmp_path / "auc_panel.png")
    assert report.plot_training_curves({}, tmp_path / "none.png") == [] and not (tmp_path / "none.png").exists()

    data = _data()
    data.history = history
    text = report.render(data, tmp_path / "report").read_text()
    assert 'alt="training curves: loss, accuracy, AUC"' in text


def test_blank_image_detection(tmp_path):
    from PIL import Image

    Image.new("RGB", (50, 50), "white").save(tmp_path / "white.png")
    assert report.image_is_blank(tmp_path / "white.png")


def test_page_renders_in_headless_chromium(tmp_path):
    needs_chromium()
    page = report.render(_data(), tmp_path / "report")
    shot = report.screenshot(page, tmp_path / "shot.png", height=2400)
    assert not report.image_is_blank(shot)
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # The page's images were drawn: the plots' blue bars / curves appear, not just text on white.
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 120)
    orange = (pixels[..., 0] > 200) & (pixels[..., 1] > 100) & (pixels[..., 1] < 200) & (pixels[..., 2] < 80)
    assert blue.sum() > 2000, "no plot colours in the screenshot"
    assert orange.sum() > 50, "no attention shading in the screenshot"
