import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub import ModelCard, SpaceCard, constants
from safetensors.torch import load_file, save_file
from tiny import WITHOUT_THE_PACKAGE, tiny_kwargs
from transformers import AutoModelForPreTraining, ViTForImageClassification

from modeling_gpa import GPAConfig, GPAForPreTraining
from modeling_gpa.training.hub import push_checkpoint_to_hub, redact_command, write_model_card, write_space

TOKEN = "hf_TestOnlyToken1234567890abcdef"
MODEL_FILES = {"configuration_gpa.py", "modeling_gpa.py", "gpa.py", "masking.py", "teacher.py"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved tiny GPA model with an EMA teacher (so the teacher's weights are in the file too)."""
    torch.manual_seed(0)
    model = GPAForPreTraining(GPAConfig(**tiny_kwargs(gpa_teacher="ema", gpa_layer=1, gpa_head=None))).eval()
    model.update_teacher()
    directory = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(directory)
    return model, directory


def test_save_pretrained_writes_safetensors_the_model_code_and_auto_map(checkpoint):
    _, directory = checkpoint
    files = set(os.listdir(directory))
    assert {"model.safetensors", "config.json"} | MODEL_FILES <= files
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    auto_map = json.loads((directory / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_gpa.GPAConfig",
        "AutoModel": "modeling_gpa.GPAModel",
        "AutoModelForPreTraining": "modeling_gpa.GPAForPreTraining",
        "AutoModelForImageClassification": "modeling_gpa.GPAForImageClassification",
        "AutoBackbone": "modeling_gpa.GPABackbone",
    }


@pytest.mark.slow
def test_trust_remote_code_loads_without_the_package_and_matches(checkpoint, tmp_path):
    model, directory = checkpoint
    torch.manual_seed(1)
    inputs = {"pixel_values": torch.randn(2, 1, 28, 28), "noise": torch.rand(2, 49)}
    save_file(inputs, tmp_path / "inputs.safetensors")
    with torch.no_grad():
        expected = model(**inputs)
    script = WITHOUT_THE_PACKAGE + textwrap.dedent(
        f"""

        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForPreTraining

        directory = {str(directory)!r}
        model = AutoModelForPreTraining.from_pretrained(directory, trust_remote_code=True, use_safetensors=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        inputs = load_file({str(tmp_path / "inputs.safetensors")!r})
        with torch.no_grad():
            outputs = model.eval()(**inputs)
        names = ("logits", "gpa_logits", "gpa", "loss")
        save_file({{n: getattr(outputs, n).contiguous() for n in names}}, {str(tmp_path / "outputs.safetensors")!r})
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = load_file(tmp_path / "outputs.safetensors")
    torch.testing.assert_close(outputs["logits"], expected.logits)
    torch.testing.assert_close(outputs["gpa_logits"], expected.gpa_logits)
    torch.testing.assert_close(outputs["gpa"], expected.gpa)
    torch.testing.assert_close(outputs["loss"], expected.loss)


def test_local_registration_loads_without_trust_remote_code(checkpoint):
    model, directory = checkpoint
    loaded = AutoModelForPreTraining.from_pretrained(directory, use_safetensors=True)
    assert type(loaded) is GPAForPreTraining
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_the_card_s_fine_tuning_path_loads_the_encoder(checkpoint):
    model, directory = checkpoint
    classifier = ViTForImageClassification.from_pretrained(directory, num_labels=10, use_safetensors=True)
    torch.testing.assert_close(
        classifier.vit.layers[2].attention.q_proj.weight, model.vit.layers[2].attention.q_proj.weight
    )
    torch.testing.assert_close(classifier.vit.embeddings.position_embeddings, model.vit.embeddings.position_embeddings)


def test_model_card_has_metadata_command_settings_results_usage_and_citation(checkpoint, tmp_path):
    model, _ = checkpoint
    command = ["run_scripts/run_pretrain.py", "--dataset_name", "fashion_mnist", "--hub_token", TOKEN, "--push_to_hub"]
    path = write_model_card(
        str(tmp_path),
        training_command=command,
        config=model.config,
        dataset_name="fashion_mnist",
        eval_results={"eval_loss": 0.123456, "knn_accuracy": 0.8},
        model_id="someone/gpa-tiny",
    )
    card = ModelCard.load(path)
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-feature-extraction"
    assert metadata["tags"] == ["gpa", "masked-image-modeling", "vit-mae", "image-pretraining"]
    assert metadata["datasets"] == ["zalando-datasets/fashion_mnist"] and metadata["license"] == "apache-2.0"
    text = card.text
    assert "run_scripts/run_pretrain.py --dataset_name fashion_mnist --hub_token '<redacted>' --push_to_hub" in text
    assert "| scoring block (`gpa_layer`) | 1 |" in text and "| scoring head (`gpa_head`) | all heads |" in text
    assert "| teacher | ema (momentum 0.999) |" in text
    assert "linear head on the pixel decoder, loss over masked patches, population z-score target |" in text
    assert "| eval_loss | 0.1235 |" in text and "| knn_accuracy | 0.8 |" in text
    assert 'ViTForImageClassification.from_pretrained("someone/gpa-tiny"' in text
    assert 'AutoModelForPreTraining.from_pretrained("someone/gpa-tiny", trust_remote_code=True' in text
    assert "Global Patch-wise Attention is Masterful Facilitator for Masked Image Modeling" in text
    assert "ACM MM" in text and "Xi and Tian and Yang and Zhang and Que and Wang" in text
    assert TOKEN not in (tmp_path / "README.md").read_text()


def test_a_card_without_results_or_hub_dataset_leaves_them_out(tmp_path):
    path = write_model_card(
        str(tmp_path),
        training_command="python run_pretrain.py --train_dir ./images",
        config=GPAConfig(**tiny_kwargs(gpa_prediction=False)),
        dataset_name=str(tmp_path),
    )
    card = ModelCard.load(path)
    assert "datasets" not in card.data.to_dict()
    assert "## Evaluation results" not in card.text and "a local image folder" in card.text


@pytest.mark.parametrize(
    "command, expected",
    [
        (["x.py", "--hub_token", TOKEN, "--seed", "1"], "x.py --hub_token '<redacted>' --seed 1"),
        (["x.py", f"--token={TOKEN}"], "x.py '--token=<redacted>'"),
        (f"HF_TOKEN={TOKEN} python x.py", "'HF_TOKEN=<redacted>' python x.py"),
    ],
)
def test_redact_command(command, expected):
    assert redact_command(command) == expected


def _digests(directory) -> dict:
    return {
        os.path.relpath(os.path.join(root, name), directory): hashlib.sha256(
            open(os.path.join(root, name), "rb").read()
        ).hexdigest()
        for root, _, names in os.walk(directory)
        for name in names
    }


@pytest.mark.parametrize("offline", [False, True])
def test_push_without_network_fails_in_one_line_and_never_leaks_the_token(
    checkpoint, tmp_path, monkeypatch, capfd, caplog, offline
):
    _, directory = checkpoint
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    before = _digests(directory)
    with pytest.raises(RuntimeError) as raised:
        push_checkpoint_to_hub(str(directory), "someone/gpa-tiny", token=TOKEN)
    message = str(raised.value)
    assert "\n" not in message and raised.value.__cause__ is None
    assert message.startswith("could not reach the Hugging Face Hub")
    assert f"the checkpoint and model card in {directory} are complete; push later with `hf upload" in message
    assert _digests(directory) == before
    captured = capfd.readouterr()
    assert TOKEN not in message + captured.out + captured.err + caplog.text
    # Every file the test session wrote; links are skipped (other tests leave dangling ones on purpose).
    for root, _, names in os.walk(tmp_path.parent):
        for path in (os.path.join(root, name) for name in names):
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    assert TOKEN.encode() not in handle.read(), path


def test_push_checks_the_directory_and_the_repo_id(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        push_checkpoint_to_hub(str(tmp_path), "someone/gpa-tiny")
    with pytest.raises(ValueError, match="not a valid repository id"):
        push_checkpoint_to_hub(str(checkpoint[1]), "not a/valid/id")


def test_space_folder_has_the_space_metadata_an_app_on_the_checkpoint_and_its_requirement(tmp_path):
    requirement = "modeling-gpa[demo] @ git+https://example.org/gpa.git"
    space = write_space(str(tmp_path / "space"), "someone/gpa-tiny", requirement=requirement)
    card = SpaceCard.load(os.path.join(space, "README.md"))
    metadata = card.data.to_dict()
    assert metadata["sdk"] == "gradio" and metadata["sdk_version"] == "6.31.0" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["someone/gpa-tiny"] and metadata["license"] == "apache-2.0"
    assert "gpa" in metadata["tags"] and len(metadata["short_description"]) <= 60
    assert "[someone/gpa-tiny](https://huggingface.co/someone/gpa-tiny)" in card.text
    app = (tmp_path / "space" / "app.py").read_text()
    compile(app, "app.py", "exec")
    assert "from modeling_gpa.tools.explorer_app import launch" in app and "launch('someone/gpa-tiny')" in app
    assert (tmp_path / "space" / "requirements.txt").read_text() == requirement + "\n"


def test_a_space_needs_a_hub_id_and_one_requirement_line(tmp_path):
    checkpoint_dir = tmp_path / "gpa"
    checkpoint_dir.mkdir()
    with pytest.raises(ValueError, match=r"^--model_name_or_path .*gpa' is a local directory; a Space loads a publ"):
        write_space(str(tmp_path / "space"), str(checkpoint_dir))
    with pytest.raises(ValueError, match=r"^--model_name_or_path 'a/b/c' is not a Hub id"):
        write_space(str(tmp_path / "space"), "a/b/c")
    with pytest.raises(ValueError, match=r"requirement .* is invalid; give one requirements.txt line\.$"):
        write_space(str(tmp_path), "someone/gpa-tiny", requirement="a\nb")
    assert os.listdir(tmp_path) == ["gpa"]
