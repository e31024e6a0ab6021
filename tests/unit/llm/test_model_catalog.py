"""The model catalog (infra/triton/models.yaml) and token counting without torch."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from streams.llm.model_catalog import (
    DEFAULT_LANE,
    DEFAULT_MODELS_FILE,
    ModelCatalogError,
    TensorSpec,
    load_models,
)
from streams.llm.tokenizing import TokenCounter, TokenizerNotFoundError, search_paths
from streams.settings import Settings

REAL = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())


def write_catalog(tmp_path: Path, models: dict[str, object], version: object = 1) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"version": version, "models": models}))
    return path


def minilm_entry(**changes: object) -> dict[str, object]:
    entry = dict(REAL["models"]["minilm"])
    entry.update(changes)
    return entry


def test_the_shipped_catalog_loads() -> None:
    catalog = load_models()
    minilm, textgen = catalog.get("minilm"), catalog.get("textgen")
    assert (minilm.task, minilm.operation, minilm.triton_model) == (
        "embeddings",
        "embeddings",
        "minilm",
    )
    assert minilm.input("text") is not None and minilm.input("text").dtype == "BYTES"
    assert minilm.output("embedding").dtype == "FP32"
    assert minilm.output("num_input_tokens").dtype == "INT32"
    assert minilm.max_input_tokens == 256 and minilm.embedding_dims == 384
    assert minilm.price_key == "sluice/minilm"
    assert (textgen.task, textgen.operation) == ("text_completion", "text_completion")
    assert textgen.decoupled and textgen.max_batch_size == 0
    assert textgen.output("num_input_tokens").dtype == "UINT32"  # as the vLLM backend sends it
    assert textgen.default_max_tokens == 64 and textgen.price_key == "sluice/textgen-test"
    assert "TEST MODEL" in textgen.description and "gibberish" in textgen.description
    assert [m.name for m in catalog.served_by_sluice()] == ["minilm", "textgen"]


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ModelCatalogError, match=r"'gpt-9' is not in .*known: minilm, textgen"):
        load_models().get("gpt-9")


def test_a_users_vllm_model_needs_only_the_required_roles(tmp_path: Path) -> None:
    path = write_catalog(
        tmp_path,
        {
            "llama": {
                "triton_model": "vllm_model",
                "task": "text_completion",
                "operation": "text_completion",
                "inputs": {"text_input": {"name": "text_input", "dtype": "BYTES"}},
                "outputs": {"text_output": {"name": "text_output", "dtype": "BYTES"}},
                "max_batch_size": 0,
                "decoupled": True,
                "max_input_tokens": 4096,
                "max_output_tokens": 1024,
                "default_max_tokens": 256,
                "tokenizer": {"path": "llama/tokenizer.json"},
                "price_key": "meta/llama-3.1-8b",
            }
        },
    )
    llama = load_models(path).get("llama")
    assert llama.serve is None and llama.output("num_input_tokens") is None
    assert load_models(path).served_by_sluice() == []
    assert not llama.streams  # no `stream` input: its requests are answered whole


def test_only_a_text_completion_model_with_the_stream_input_streams() -> None:
    catalog = load_models()
    assert catalog.get("textgen").streams
    assert catalog.get("textgen").input("stream") == TensorSpec(name="stream", dtype="BOOL")
    assert not catalog.get("minilm").streams


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ({"minilm": minilm_entry(task="classify")}, r"models\.minilm|task"),
        ({"minilm": minilm_entry(inputs={})}, r"needs inputs text"),
        (
            {
                "minilm": minilm_entry(
                    outputs={
                        **REAL["models"]["minilm"]["outputs"],
                        "logits": {"name": "l", "dtype": "FP32"},
                    }
                )
            },
            r"unknown outputs role\(s\) logits.*known: embedding, num_input_tokens",
        ),
        (
            {"minilm": minilm_entry(inputs={"text": {"name": "text", "dtype": "STRING"}})},
            r"inputs\.text\.dtype",
        ),
        ({"minilm": minilm_entry(embedding_dims=None)}, r"needs embedding_dims"),
        ({"minilm": minilm_entry(max_batch_size=-1)}, r"max_batch_size"),
        ({"minilm": minilm_entry(price_key="no slash")}, r"price_key"),
        ({"minilm": minilm_entry(tokenizer={"package": "x", "path": "y"})}, r"exactly one of"),
        ({"minilm": minilm_entry(colour="blue")}, r"colour"),
        (
            {"textgen": {**REAL["models"]["textgen"], "default_max_tokens": None}},
            r"needs default_max_tokens",
        ),
        (
            {"textgen": {**REAL["models"]["textgen"], "default_max_tokens": 9999}},
            r"larger than max_output_tokens",
        ),
        ({"minilm": minilm_entry(name="other")}, r"has a `name` field"),
        ({"a": minilm_entry(), "b": minilm_entry()}, r"both served by Sluice as Triton model"),
        ({"bad name!": minilm_entry()}, r"name"),
    ],
)
def test_a_bad_catalog_fails_at_load_naming_file_and_field(
    tmp_path: Path, models: dict[str, object], expected: str
) -> None:
    path = write_catalog(tmp_path, models)
    with pytest.raises(ModelCatalogError, match=expected) as info:
        load_models(path)
    assert str(path) in str(info.value)


def test_bad_yaml_a_wrong_version_and_a_missing_file_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text("version: 1\nmodels: [unclosed\n")
    with pytest.raises(ModelCatalogError, match="is not valid YAML"):
        load_models(path)
    with pytest.raises(ModelCatalogError, match="version"):
        load_models(write_catalog(tmp_path, {}, version=2))
    with pytest.raises(ModelCatalogError, match="cannot read the model catalog"):
        load_models(tmp_path / "absent.yaml")


# --- token counting ---------------------------------------------------------------------------


def tiny_wordpiece(path: Path) -> Path:
    """A BERT-style tokenizer.json that, like MiniLM's, truncates and pads unless told not to."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5, "##s": 6}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))  # noqa: S106
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.enable_truncation(max_length=4)
    tokenizer.enable_padding(length=16, pad_id=0, pad_token="[PAD]")  # noqa: S106
    tokenizer.save(str(path))
    return path


def catalog_with_tokenizer(tmp_path: Path, tokenizer: dict[str, str]) -> Path:
    return write_catalog(tmp_path, {"minilm": minilm_entry(tokenizer=tokenizer)})


def test_counting_ignores_the_files_padding_and_truncation(tmp_path: Path) -> None:
    tiny_wordpiece(tmp_path / "tok.json")
    catalog = load_models(catalog_with_tokenizer(tmp_path, {"path": "tok.json"}))
    counter = TokenCounter(tmp_path)
    model = catalog.get("minilm")
    # [CLS] hello world ##s hello world [SEP]: 7, neither cut to 4 nor padded to 16.
    assert counter.count(model, ["Hello worlds hello world", "", "zzz"]) == [7, 2, 3]
    assert counter.over_limit(model, ["hello " * 300, "hello"]) == [302, None]


def test_a_packaged_tokenizer_is_found_in_the_triton_venv(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "some_model_pkg" / "model").mkdir(parents=True)
    tiny_wordpiece(site / "some_model_pkg" / "model" / "tokenizer.json")
    catalog = load_models(
        catalog_with_tokenizer(
            tmp_path, {"package": "some_model_pkg", "file": "model/tokenizer.json"}
        )
    )
    settings = Settings(stack={"triton_venv": tmp_path / "venv"})
    counter = TokenCounter(tmp_path, search_paths(settings))
    assert counter.count(catalog.get("minilm"), ["hello"]) == [3]


def test_a_missing_tokenizer_says_how_to_get_it(tmp_path: Path) -> None:
    catalog = load_models(
        catalog_with_tokenizer(
            tmp_path, {"package": "not_installed_pkg", "file": "model/tokenizer.json"}
        )
    )
    with pytest.raises(TokenizerNotFoundError, match=r"sluice up --only triton"):
        TokenCounter(tmp_path, []).count(catalog.get("minilm"), ["hello"])
    catalog = load_models(catalog_with_tokenizer(tmp_path, {"path": "nowhere.json"}))
    with pytest.raises(TokenizerNotFoundError, match=r"fix tokenizer.path"):
        TokenCounter(tmp_path, []).count(catalog.get("minilm"), ["hello"])


def test_the_catalog_comment_lists_the_roles_the_loader_enforces() -> None:
    from streams.llm.model_catalog import ROLES

    header = textwrap.dedent(DEFAULT_MODELS_FILE.read_text().split("version:")[0])
    for required, optional in ROLES.values():
        for side in ("inputs", "outputs"):
            for role in required[side] | optional[side]:
                assert role in header, role


# --- lanes -----------------------------------------------------------------------------------


def catalog_with_lanes(tmp_path: Path, lanes: object) -> Path:
    path = tmp_path / "models.yaml"
    document = {"version": 1, "models": REAL["models"], "lanes": lanes}
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_shipped_catalog_puts_embeddings_in_a_lane_of_their_own() -> None:
    catalog = load_models()
    assert catalog.lanes == {"embeddings": ("minilm",)}
    assert catalog.lane_of("minilm") == "embeddings"
    assert catalog.lane_of("textgen") == DEFAULT_LANE  # no lane names it


@pytest.mark.parametrize("model", ["gpt-9", "", "MINILM", None, 7, ["minilm"]])
def test_an_unknown_model_or_a_field_that_is_no_name_is_the_default_lanes(model: object) -> None:
    assert load_models().lane_of(model) == DEFAULT_LANE


def test_a_catalog_without_lanes_serves_everything_in_the_default_lane(tmp_path: Path) -> None:
    catalog = load_models(write_catalog(tmp_path, REAL["models"]))
    assert catalog.lanes == {}
    assert {catalog.lane_of(m) for m in catalog.models} == {DEFAULT_LANE}
    catalog.check_lane(DEFAULT_LANE)


def test_an_undeclared_lane_says_which_lanes_exist_and_what_to_do() -> None:
    catalog = load_models()
    catalog.check_lane("embeddings")
    catalog.check_lane(DEFAULT_LANE)
    with pytest.raises(
        ModelCatalogError,
        match=r"lane 'generation' is not declared in .*known: default, embeddings\. "
        r"Set SLUICE_INFER__LANE",
    ):
        catalog.check_lane("generation")


@pytest.mark.parametrize(
    ("lanes", "expected"),
    [
        (
            {"fast": ["minilm"], "also-fast": ["minilm"]},
            # yaml sorts the lanes
            r"model 'minilm' is in lanes 'also-fast' and 'fast'.*remove it from one",
        ),
        ({"fast": ["gpt-9"]}, r"lane 'fast' names model 'gpt-9', which is not in `models:`"),
        ({"default": ["minilm"]}, r"lane 'default' is implicit"),
        ({"Fast Lane": ["minilm"]}, r"lane 'Fast Lane' is not a valid name"),
        ({"fast": []}, r"lane 'fast' names no model"),
        (["minilm"], r"not a valid model catalog"),
    ],
)
def test_a_bad_lane_declaration_fails_at_load_with_the_fix(
    tmp_path: Path, lanes: object, expected: str
) -> None:
    with pytest.raises(ModelCatalogError, match=expected):
        load_models(catalog_with_lanes(tmp_path, lanes))


def test_a_model_listed_twice_in_its_own_lane_is_still_one_lanes(tmp_path: Path) -> None:
    catalog = load_models(catalog_with_lanes(tmp_path, {"fast": ["minilm", "minilm"]}))
    assert catalog.lane_of("minilm") == "fast"
