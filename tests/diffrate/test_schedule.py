"""Schedule: validation, effective counts, our JSON format and the public compression_rate.json format."""

from __future__ import annotations

import json

import pytest

from keenvision.diffrate import Schedule, published_schedule, published_schedules


def test_keep_all_from_model_and_from_depth(make_vit):
    schedule = Schedule.keep_all(make_vit())
    assert schedule.prune_kept == (65,) * 4 and schedule.merge_kept == (65,) * 4
    assert Schedule.keep_all(12, tokens=197).depth == 12


def test_effective_counts_are_non_increasing_for_non_monotone_schedule():
    schedule = Schedule((65, 30, 50, 40), (60, 40, 45, 10))
    assert schedule.kept_tokens_per_block(65) == [60, 30, 30, 10]


def test_own_format_round_trip(tmp_path):
    schedule = Schedule((65, 50, 40, 30), (60, 45, 35, 20))
    path = schedule.save(tmp_path / "schedule.json")
    assert json.loads(path.read_text())["format"] == "keenvision.diffrate.schedule"
    assert Schedule.load(path) == schedule


def test_public_entry_and_whole_public_file_with_selector(tmp_path):
    entry = {"prune_kept_num": "[197,196,190]", "merge_kept_num": "[197,194,176]"}
    (tmp_path / "entry.json").write_text(json.dumps(entry))
    assert Schedule.load(tmp_path / "entry.json") == Schedule((197, 196, 190), (197, 194, 176))
    whole = {"ViT-S-DeiT": {"2.9": entry}}
    (tmp_path / "compression_rate.json").write_text(json.dumps(whole))
    loaded = Schedule.load(f"{tmp_path / 'compression_rate.json'}#ViT-S-DeiT/2.9")
    assert loaded == Schedule((197, 196, 190), (197, 194, 176))
    assert Schedule.from_dict(loaded.to_public_dict()) == loaded


def test_published_schedules_are_shipped():
    assert published_schedules()["ViT-S-DeiT"] == ["2.3", "2.9"]
    schedule = published_schedule("ViT-S-DeiT", 2.9)
    assert schedule.prune_kept[-1] == 3 and schedule.depth == 12


def _one_line_value_error(call, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_schedules_raise_one_line_value_errors(tmp_path, make_vit):
    _one_line_value_error(lambda: Schedule.keep_all(make_vit()).validate(12, 65), "12")
    _one_line_value_error(lambda: Schedule((66, 65, 65, 65), (65,) * 4).validate(4, 65), "exceeds")
    _one_line_value_error(lambda: Schedule((65, 64.5), (65, 64)), "not an integer")
    _one_line_value_error(lambda: Schedule((65, True), (65, 64)), "not an integer")
    _one_line_value_error(lambda: Schedule((65, 0), (65, 64)), ">= 1")
    _one_line_value_error(lambda: Schedule((65, 64), (65,)), "one per block")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"prune_kept": [65, 64,')
    assert "corrupt.json" in _one_line_value_error(lambda: Schedule.load(corrupt), "not valid JSON")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    _one_line_value_error(lambda: Schedule.load(binary), "binary.json")
    _one_line_value_error(lambda: Schedule.load(tmp_path / "missing.json"), "does not exist")
    wrong_type = tmp_path / "wrong_type.json"
    wrong_type.write_text('{"prune_kept_num": "[197, \\"x\\"]", "merge_kept_num": "[197, 190]"}')
    _one_line_value_error(lambda: Schedule.load(wrong_type), "not an integer")
    whole = tmp_path / "compression_rate.json"
    whole.write_text(json.dumps({"ViT-S-DeiT": {"2.9": {"prune_kept_num": "[1]", "merge_kept_num": "[1]"}}}))
    _one_line_value_error(lambda: Schedule.load(f"{whole}#ViT-B-DeiT/2.9"), "no model")
    _one_line_value_error(lambda: Schedule.load(f"{whole}#ViT-S-DeiT/9.9"), "no entry")
    _one_line_value_error(lambda: Schedule.load(f"{whole}#ViT-S-DeiT"), "MODEL/GFLOPS")
    _one_line_value_error(lambda: Schedule.load(whole), "selector")
    _one_line_value_error(lambda: published_schedule("ViT-S-DeiT", "7.7"), "no entry")
