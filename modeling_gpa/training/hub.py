"""Model cards and Hub uploads for GPA checkpoints.

``write_model_card`` fills ``model_cards/gpa_model_card.md`` (metadata header, training command, GPA settings,
evaluation results, usage, citation) into ``README.md`` of a checkpoint directory. ``push_checkpoint_to_hub``
uploads that directory; ``write_space`` writes a Hugging Face Space folder (the GPA explorer on a published
checkpoint). When the Hub cannot be reached, the upload raises one ``RuntimeError`` line saying how to push later,
and leaves the local files as they are. Tokens are never printed or written: flags that carry one are redacted
from the training command, and error messages name no credentials.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template

from huggingface_hub import HfApi, ModelCardData, SpaceCard, SpaceCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

TAGS = ["gpa", "masked-image-modeling", "vit-mae", "image-pretraining"]
PIPELINE_TAG = "image-feature-extraction"
TEMPLATE_NAME = "gpa_model_card.md"
# Flags whose value is a credential, in the command recorded in the card.
SECRET_FLAGS = ("--hub_token", "--token", "--hf_token")
# Hugging Face user access tokens, wherever one appears in the command (an env assignment, a positional value).
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")
REDACTED = "<redacted>"
# Hub dataset ids of the offline datasets this project builds.
HUB_DATASET_IDS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "zalando-datasets/fashion_mnist": "zalando-datasets/fashion_mnist",
    "cluttered_fashion_mnist": "zalando-datasets/fashion_mnist",
}
# Pickle files (optimizer states, training arguments, .bin weights) and intermediate checkpoints stay local: the
# Hub copy holds safetensors weights, config, code, card and logs only.
UPLOAD_IGNORE = ["checkpoint-*", "checkpoint-*/**", "*.pt", "*.pth", "*.bin", "*.pkl", "*.pickle"]
# The Gradio release the explorer was built and tested with; a Space installs the SDK version its README names.
SPACE_SDK_VERSION = "6.31.0"
DEFAULT_SPACE_REQUIREMENT = "modeling-gpa[demo]"
SPACE_APP = """from modeling_gpa.tools.explorer_app import launch

# The Space sets GRADIO_SERVER_NAME; Gradio serves on 127.0.0.1 elsewhere.
launch({model_id!r})
"""


def redact_command(command: str | Sequence[str]) -> str:
    """The command as one shell line with every token value replaced by ``<redacted>``."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    redacted, hide_next = [], False
    for argument in argv:
        flag, has_value, _ = argument.partition("=")
        if hide_next:
            argument, hide_next = REDACTED, False
        elif flag in SECRET_FLAGS:
            argument = f"{flag}={REDACTED}" if has_value else argument
            hide_next = not has_value
        redacted.append(TOKEN_PATTERN.sub(REDACTED, argument))
    return shlex.join(redacted)


def _config_dict(config) -> dict:
    return dict(config) if isinstance(config, Mapping) else config.to_dict()


def _ratio(config: dict, name: str) -> str:
    return f"{config.get(f'{name}_ratio_start')} → {config.get(f'{name}_ratio_end')}"


def settings_rows(config) -> list[tuple[str, str]]:
    """(setting, value) rows describing the GPA method and the architecture of ``config`` (a GPAConfig or dict)."""
    config = _config_dict(config)
    teacher = str(config.get("gpa_teacher"))
    if teacher == "pretrained":
        teacher = f"pretrained (`{config.get('gpa_teacher_name_or_path')}`, frozen)"
    elif teacher == "ema":
        teacher = f"ema (momentum {config.get('gpa_ema_momentum')})"
    head = config.get("gpa_head")
    mam = "off"
    if config.get("gpa_prediction"):
        decoder = config.get("gpa_decoder_layers") or 0
        predictor = f"{decoder}-layer decoder" if decoder else "linear head on the pixel decoder"
        mam = (
            f"on, weight {config.get('gpa_loss_weight')}, {predictor}, loss over "
            f"{config.get('gpa_loss_patches', 'masked')} patches, {config.get('gpa_target_norm', 'population')} "
            "z-score target"
        )
    return [
        ("teacher", teacher),
        ("scoring block (`gpa_layer`)", str(config.get("gpa_layer"))),
        ("scoring head (`gpa_head`)", "all heads" if head is None else str(head)),
        ("score (`gpa_score`)", str(config.get("gpa_score"))),
        ("queries (`gpa_queries`)", str(config.get("gpa_queries"))),
        ("mask ratio", str(config.get("mask_ratio"))),
        ("hard share of the mask (start → end)", _ratio(config, "hard")),
        ("soft share of the mask (start → end)", _ratio(config, "soft")),
        ("Masked Attention Modeling", mam),
        ("normalised pixel loss", str(config.get("norm_pix_loss"))),
        (
            "encoder",
            f"ViT, {config.get('num_hidden_layers')} blocks, {config.get('num_attention_heads')} heads, "
            f"hidden size {config.get('hidden_size')}",
        ),
        (
            "input",
            f"{config.get('image_size')} px, patch {config.get('patch_size')}, {config.get('num_channels')} channel(s)",
        ),
    ]


def _format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _evaluation_section(eval_results: Mapping[str, object] | None) -> str:
    if not eval_results:
        return ""
    rows = "\n".join(f"| {name} | {_format_value(value)} |" for name, value in eval_results.items())
    return f"\n## Evaluation results\n\n| metric | value |\n|---|---|\n{rows}\n"


def _dataset_metadata(dataset_name: str) -> tuple[list[str] | None, str]:
    """Hub dataset ids for the metadata (none for a local folder) and how the body names the data."""
    if dataset_name in HUB_DATASET_IDS:
        hub_id = HUB_DATASET_IDS[dataset_name]
        text = f"[{dataset_name}](https://huggingface.co/datasets/{hub_id})"
        if dataset_name == "cluttered_fashion_mnist":
            text = f"cluttered Fashion-MNIST (built from [Fashion-MNIST](https://huggingface.co/datasets/{hub_id}))"
        return [hub_id], text
    if os.path.exists(dataset_name):
        return None, "a local image folder"
    return [dataset_name], f"[{dataset_name}](https://huggingface.co/datasets/{dataset_name})"


def render_model_card(
    *,
    training_command: str | Sequence[str],
    config,
    dataset_name: str,
    eval_results: Mapping[str, object] | None = None,
    base_model: str | None = None,
    model_id: str = "path/to/checkpoint",
    license: str = "apache-2.0",
) -> str:
    """The model card's Markdown, metadata header included."""
    datasets, dataset_text = _dataset_metadata(dataset_name)
    metadata = ModelCardData(
        library_name="transformers",
        license=license,
        tags=TAGS,
        datasets=datasets,
        pipeline_tag=PIPELINE_TAG,
        base_model=base_model,
    ).to_yaml()
    values = _config_dict(config)
    teacher_saved = values.get("gpa_teacher") in ("ema", "pretrained")
    template = Template(card_template())
    return template.substitute(
        metadata=metadata,
        title=f"GPA masked image modeling: {model_id.rstrip('/').split('/')[-1]}",
        dataset_text=dataset_text,
        mam_text=(
            " Masked Attention Modeling adds a second target: the teacher's normalised score of each masked patch."
            if values.get("gpa_prediction")
            else ""
        ),
        training_command=redact_command(training_command),
        settings_table="\n".join(f"| {name} | {value} |" for name, value in settings_rows(config)),
        evaluation_section=_evaluation_section(eval_results),
        model_id=model_id,
        teacher_note=" and the saved teacher" if teacher_saved else "",
    )


def card_template() -> str:
    """The model-card template: ``model_cards/`` at the top of a checkout, ``modeling_gpa/model_cards/`` in a wheel.

    setup.cfg packages the top-level folder's template into the wheel under that name, so the cards of the reference
    checkpoints stay beside the template in the repository while an installed package can still write a card.
    """
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / TEMPLATE_NAME
    if checkout.is_file():
        return checkout.read_text("utf-8")
    return resources.files("modeling_gpa").joinpath("model_cards", TEMPLATE_NAME).read_text("utf-8")


def write_model_card(
    output_dir: str,
    *,
    training_command: str | Sequence[str],
    config,
    dataset_name: str,
    eval_results: Mapping[str, object] | None = None,
    base_model: str | None = None,
    model_id: str | None = None,
    license: str = "apache-2.0",
) -> str:
    """Writes ``output_dir/README.md`` and returns its path.

    Args:
        training_command: the command that trained the checkpoint (``sys.argv`` or a string); tokens are redacted.
        config: the ``GPAConfig`` (or its dict) of the checkpoint.
        dataset_name: ``fashion_mnist``, ``cluttered_fashion_mnist``, a Hub dataset id or a local folder (a local
            folder is left out of the metadata).
        eval_results: ``{metric: value}`` shown as a table when given.
        base_model: Hub id of the pretrained teacher or initial weights, for the metadata.
        model_id: the Hub id used in the usage snippets (default: the directory's name).
    """
    if not os.path.isdir(output_dir):
        raise FileNotFoundError(f"checkpoint directory {output_dir!r} does not exist; save the model there first.")
    card = render_model_card(
        training_command=training_command,
        config=config,
        dataset_name=dataset_name,
        eval_results=eval_results,
        base_model=base_model,
        model_id=model_id or os.path.basename(os.path.normpath(output_dir)),
        license=license,
    )
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(card)
    return path


def write_space(
    space_dir: str, model_id: str, *, requirement: str = DEFAULT_SPACE_REQUIREMENT, license: str = "apache-2.0"
) -> str:
    """Writes a Gradio Space that opens the GPA explorer on the Hub checkpoint ``model_id``; returns ``space_dir``.

    ``app.py`` launches ``modeling_gpa.tools.explorer_app``; ``requirements.txt`` holds ``requirement`` (how the Space
    installs this package, e.g. ``modeling-gpa[demo] @ git+https://...``); ``README.md`` has the Space metadata.
    """
    if os.path.isdir(model_id):
        raise ValueError(
            f"--model_name_or_path {model_id!r} is a local directory; a Space loads a published checkpoint: push it "
            "(--push_to_hub) and pass its Hub id ('user-or-org/model-name')."
        )
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise ValueError(
            f"--model_name_or_path {model_id!r} is not a Hub id; a Space loads a published checkpoint "
            "('user-or-org/model-name')."
        ) from None
    if not requirement.strip() or "\n" in requirement:
        raise ValueError(f"requirement {requirement!r} is invalid; give one requirements.txt line.")
    metadata = SpaceCardData(
        title=f"GPA explorer: {model_id.split('/')[-1]}"[:60],
        emoji="🎭",
        colorFrom="red",
        colorTo="blue",
        sdk="gradio",
        sdk_version=SPACE_SDK_VERSION,
        app_file="app.py",
        pinned=False,
        license=license,
        models=[model_id],
        tags=TAGS,
        short_description="GPA heat maps, Eq. 6 masks and MAE reconstructions",
    )
    text = (
        f"# GPA explorer for [{model_id}](https://huggingface.co/{model_id})\n\n"
        "Upload an image or pick an example, choose the teacher's block and head, the score, the mask ratio and the "
        "training progress: the page shows the Global Patch-wise Attention heat map, the soft-to-hard mask (hard, "
        "soft and random patches) and the MAE reconstruction under it; with an object mask, the share of the object "
        "the mask hides, for every block and head.\n"
    )
    os.makedirs(space_dir, exist_ok=True)
    SpaceCard(f"---\n{metadata.to_yaml()}\n---\n\n{text}").save(os.path.join(space_dir, "README.md"))
    files = {"app.py": SPACE_APP.format(model_id=model_id), "requirements.txt": f"{requirement.strip()}\n"}
    for name, content in files.items():
        with open(os.path.join(space_dir, name), "w", encoding="utf-8") as handle:
            handle.write(content)
    return space_dir


def push_checkpoint_to_hub(output_dir: str, hub_model_id: str, token: str | None = None, private: bool = False) -> str:
    """Uploads the checkpoint directory (safetensors weights, config, model code, card, logs) to ``hub_model_id``.

    Pickle files and intermediate ``checkpoint-*`` folders stay local. ``token`` defaults to the stored login.

    Returns:
        The URL of the upload commit.

    Raises:
        RuntimeError: one line, when the Hub cannot be reached or refuses the upload; nothing local is changed.
    """
    missing = [f for f in ("config.json", "model.safetensors") if not os.path.isfile(os.path.join(output_dir, f))]
    if missing:
        raise FileNotFoundError(
            f"{output_dir!r} is not a complete checkpoint (no {', '.join(missing)}); save_pretrained it first."
        )
    try:
        validate_repo_id(hub_model_id)
    except HFValidationError:
        raise ValueError(
            f"hub_model_id {hub_model_id!r} is not a valid repository id; use 'user-or-org/model-name'."
        ) from None
    later = (
        f"the checkpoint and model card in {output_dir} are complete; push later with "
        f"`hf upload {hub_model_id} {output_dir} . {' '.join(f'--exclude {shlex.quote(p)}' for p in UPLOAD_IGNORE)}`"
    )
    api = HfApi(token=token)
    try:
        api.create_repo(hub_model_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=output_dir,
            repo_id=hub_model_id,
            commit_message="Upload GPA checkpoint",
            ignore_patterns=UPLOAD_IGNORE,
        )
    except HfHubHTTPError as error:
        # The Hub answered: a missing or read-only token, or a repository owned by someone else.
        status = error.response.status_code if error.response is not None else "?"
        raise RuntimeError(
            f"the Hugging Face Hub refused the upload to {hub_model_id} (HTTP {status}): log in with `hf auth login` "
            f"or pass a token with write access to that namespace; {later}"
        ) from None
    except Exception as error:
        # No answer: offline mode, DNS, refused connection or timeout (the HTTP client's error types vary by version).
        reason = (str(error).splitlines() or [""])[0]
        raise RuntimeError(
            f"could not reach the Hugging Face Hub ({type(error).__name__}: {reason}); {later}"
        ) from None
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "push_checkpoint_to_hub",
    "redact_command",
    "render_model_card",
    "settings_rows",
    "write_model_card",
    "write_space",
]
