import json
import sys
from pathlib import Path

from PIL import Image
from tiny import config_overrides

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "run_scripts"))
import evaluate_pretraining  # noqa: E402
import run_pretrain  # noqa: E402

OVERRIDES = config_overrides(patch_size=7, num_hidden_layers=2)


def test_compares_the_pretrained_encoder_with_its_random_init_and_draws_the_curves(tmp_path):
    checkpoint = tmp_path / "gpa"
    run_pretrain.main(
        [
            "--dataset_name", "fashion_mnist", "--max_train_samples", "64", "--output_dir", str(checkpoint),
            "--do_train", "--config_overrides", OVERRIDES, "--per_device_train_batch_size", "16",
            "--max_steps", "4", "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none",
        ]
    )  # fmt: skip
    output_dir = tmp_path / "evaluation"
    results = evaluate_pretraining.main(
        [
            "--model_name_or_path", str(checkpoint), "--dataset_name", "fashion_mnist",
            "--max_train_samples", "300", "--max_eval_samples", "100", "--output_dir", str(output_dir),
        ]
    )  # fmt: skip
    assert json.loads((output_dir / "results.json").read_text()) == results
    assert (results["num_train"], results["num_eval"], results["unreadable_images"]) == (300, 100, 0)
    for encoder in ("pretrained", "random init"):
        for pooling in ("cls", "mean"):
            # Ten classes: anything learned or not, k-NN on Fashion-MNIST features is well above 10% chance.
            assert 0.2 < results["knn_top1"][encoder][pooling] <= 1.0
    curves = evaluate_pretraining.training_curves(str(checkpoint))
    assert [step for step, _ in curves["loss"]] == [1, 2, 3, 4]
    assert set(curves) == {"loss", "pixel_loss", "gpa_loss"}
    with Image.open(output_dir / "evaluation.png") as figure:
        assert figure.size[0] > 1000
